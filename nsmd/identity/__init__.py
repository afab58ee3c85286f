"""SPIFFE identities: a development CA, X.509 SVIDs from files or the Workload API, mTLS."""
