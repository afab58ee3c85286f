"""The HTTP API (/v1/) on the daemon's unix socket: decode, call, encode; no logic here."""
