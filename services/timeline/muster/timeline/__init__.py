"""The timeline worker process (see ../shared/ARCHITECTURE.md)."""
