"""The escalation worker process (see docs/architecture.md, Roll-calls: escalation)."""
