"""HTTP API tests: the app in-process over httpx's ASGI transport, or on a live loopback uvicorn."""
