"""The manager: Request / Close / Monitor as chains of small elements (NSM's sdk shape)."""
