"""cell-gateway: an OPC UA cell-controller gateway for one machining cell."""

__version__ = "0.1.0"
