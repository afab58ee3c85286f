"""docs/reference is what the code would write now: a new option, command or metric
without its reference (or a stale one) fails here; `python -m nsmd.cli.reference
docs/reference` brings them back in step."""

from __future__ import annotations

import os

import pytest

from nsmd.cli import reference

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "reference")


@pytest.mark.parametrize("page", sorted(reference.PAGES))
def test_reference_is_current(page):
    with open(os.path.join(DOCS, page), encoding="utf-8") as f:
        written = f.read()
    assert written == reference.PAGES[page](), (
        f"docs/reference/{page} drifted: run python -m nsmd.cli.reference docs/reference")


def test_every_option_command_and_metric_is_in_it():
    import dataclasses

    from nsmd.cli.main import build_parser
    from nsmd.config import Config

    assert all(f"`NSMD_{f.name.upper()}`" in reference.config()
               for f in dataclasses.fields(Config))
    assert all(f"## nsmd {name}" in reference.cli() for name in
               ("run", "apply", "get", "ca issue", "doctor"))
    assert build_parser().prog == "nsmd"
    assert "`nsmd_peer_bytes_total` | counter | direction, peer" in reference.metrics()
