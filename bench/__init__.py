"""Throughput, latency and memory of the gateway against a bare asyncua server, measured in one run.

``make bench`` (``python -m bench``) writes ``bench/results/latest.md`` and ``latest.json``.
"""
