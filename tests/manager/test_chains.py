"""The chains describe themselves (Chain.describe), and what build.py's docstring and
docs/architecture.md say of them is what they are."""

from pathlib import Path

import pytest

from nsmd.dataplane import Dataplane
from nsmd.hosting import Hosting
from nsmd.manager import build
from nsmd.manager.build import Manager
from nsmd.metrics import Metrics
from nsmd.registry import Registry
from nsmd.state import StateDB
from nsmd.testing.fake_clock import FakeClock

ARCHITECTURE = Path(__file__).parent.parent.parent / "docs" / "architecture.md"


@pytest.fixture
def manager(tmp_path):
    db, clock = StateDB(str(tmp_path)), FakeClock()
    registry = Registry(db, clock)
    return Manager(name="n1", registry=registry, hosting=Hosting(db, registry, clock,
                                                                 "unix:///x", "n1"),
                   dataplane=Dataplane(db, 1, 1, ("chacha20-poly1305",)), db=db,
                   clock=clock, metrics=Metrics())


def flat(text: str) -> str:
    return " ".join(text.split())


async def test_the_docs_show_the_chains_as_built(manager):
    client, server = manager.client.describe(expand=True), manager.server.describe(expand=True)
    assert client.startswith("heal -> begin") and client.endswith("act as daemon -> server")
    assert "connect [endpoint here: updatepath" in server and server.endswith("remote]")
    for where, text in (("build.py", build.__doc__ or ""),
                        ("docs/architecture.md", ARCHITECTURE.read_text())):
        assert flat(client) in flat(text), (where, client)
        assert flat(server) in flat(text), (where, server)
