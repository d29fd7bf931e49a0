"""HTTP routes, one module per section of docs/api.md; each handler is thin: auth, decode, call writes."""
