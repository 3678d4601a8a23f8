"""HTTP routes of the auth service (all internal: called only by the gateway)."""
