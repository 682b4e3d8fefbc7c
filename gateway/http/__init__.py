"""The HTTP adapter: the ERP API (FastAPI), the status page and /healthz, /metrics, the docs pages, the
edge every request passes (credentials, limits) and the uvicorn server."""
