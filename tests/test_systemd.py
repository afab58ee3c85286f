import os
import socket

from nsmd.systemd import Notifier


def test_notifications_reach_an_abstract_socket():
    name = f"nsmd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("serving")
        assert server.recv(4096) == b"READY=1\nSTATUS=serving"


def test_without_systemd_nothing_is_sent_and_the_watchdog_is_off():
    assert not Notifier({}).send("READY=1")
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000"}).watchdog_s == 2.0
    # a watchdog meant for another process (WATCHDOG_PID) is not ours to pet
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000",
                     "WATCHDOG_PID": "1"}).watchdog_s is None
