"""Test kit for the control path: a fake clock and chain elements that count, check or fail."""
