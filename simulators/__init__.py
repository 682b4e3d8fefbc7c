"""Simulated PLCs and a simulated cell that drive a real cell-gateway over OPC UA.

``cell-gateway simulate`` runs a production day against a gateway; ``tests/e2e`` and ``bench/`` use the
same pieces. See docs/simulator.md.
"""
