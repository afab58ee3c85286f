import pytest

from nsmd.model import Connection, NetworkServiceRequest, Path, PathSegment
from nsmd.registry import Registry
from nsmd.state import StateDB
from nsmd.testing.fake_clock import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_request():
    def make(conn_id="c0", service="svc", labels=None, name="nsc", expires=0.0):
        conn = Connection(id=conn_id, network_service=service, labels=labels or {},
                          path=Path(0, [PathSegment(name=name, id=conn_id, expires=expires)]))
        return NetworkServiceRequest(connection=conn)
    return make


@pytest.fixture
async def registry(tmp_path, clock):
    db = StateDB(str(tmp_path))
    reg = Registry(db, clock)
    yield reg
    reg.close()
    db.close()
