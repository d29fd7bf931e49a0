"""The audit worker process (see docs/architecture.md)."""
