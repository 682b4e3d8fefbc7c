"""The HTTP/JSON adapter for the ERP: FastAPI app, HTTP Basic auth, problem details, the uvicorn server."""
