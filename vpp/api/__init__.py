"""The operator HTTP API (FastAPI, under /api/v1)."""
