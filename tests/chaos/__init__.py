"""The chaos run: every process kind twice, SIGKILLs, a Redis restart, failing receivers."""
