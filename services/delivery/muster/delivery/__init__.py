"""The delivery worker process (see ../shared/ARCHITECTURE.md)."""
