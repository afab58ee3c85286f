import os
import threading

import pytest

from nsmd import netns
from nsmd.errors import DataplaneError


def test_a_fifo_named_as_a_namespace_fails_at_once(tmp_path):
    fifo = tmp_path / "not-a-netns"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt():
        try:
            netns.enter(str(fifo))
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=attempt, daemon=True)  # enter() moves only this thread
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "enter() hung on a FIFO"
    assert outcome and isinstance(outcome[0], DataplaneError)
    with pytest.raises(DataplaneError, match="does not exist"):
        netns.enter(str(tmp_path / "missing"))
