"""Daemon-to-daemon control plane over mutual TLS: msgpack requests, registry and vWires."""
