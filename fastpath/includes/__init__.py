"""Extern-only declarations (.pxd) of the C APIs the fast path calls."""
