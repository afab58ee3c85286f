"""Network service functions chained into endpoints (built-ins use only plugins.api)."""
