"""The timeline worker process (see docs/architecture.md)."""
