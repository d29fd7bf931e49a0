"""The audit worker process (see ../shared/ARCHITECTURE.md)."""
