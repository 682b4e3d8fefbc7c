"""Tracking: pallet and machine-cycle events into unit scans with elapsed and expected times.

Pure domain: synchronous, no I/O, no clock reads. The rules for messy reality live in
``docs/tracking.md``; each one has a name in :class:`gateway.tracking.anomalies.Anomaly`.
"""
