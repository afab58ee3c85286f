"""The daemon's life: whatever a start that fails half-way took is given back at once."""

import fcntl
import os

import pytest

from nsmd.config import Config
from nsmd.daemon import LOCK_FILE, Daemon
from nsmd.errors import ValidationError


async def test_a_start_that_fails_half_way_gives_back_what_it_took(tmp_path):
    cfg = Config(state_dir=str(tmp_path / "state"), api_socket=str(tmp_path / "api.sock"),
                 policy=str(tmp_path / "missing.yaml"))
    with pytest.raises(ValidationError, match="policy"):
        await Daemon(cfg).start()   # fails after taking the state directory's lock
    fd = os.open(tmp_path / "state" / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free again
    finally:
        os.close(fd)
    assert not os.path.exists(tmp_path / "api.sock")
