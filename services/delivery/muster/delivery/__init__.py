"""The delivery worker process (see docs/architecture.md)."""
