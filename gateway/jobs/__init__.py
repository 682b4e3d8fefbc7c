"""Jobs and routings: part specs, routing templates, the job state machine, route rules, cap, split, merge.

Pure domain: synchronous, no I/O, no clock reads (tests/unit/test_purity.py holds it to that).
"""
