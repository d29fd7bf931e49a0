"""HTTP routes, one module per section of API.md; each handler is thin: auth, decode, call writes."""
