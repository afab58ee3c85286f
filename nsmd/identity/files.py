"""X.509 SVIDs from an --identity-dir (svid.pem, svid.key, bundle.pem), reloaded on change.

Whoever renews the files (`nsmd ca issue`, cert-manager, a cron job) needs no signal to
the daemon: the three files are polled (inode, size, mtime) and a changed set is loaded
and verified like the first. A half-written set (new certificate, old key) fails the
checks and is tried again at the next poll; the SVID in use stays until then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from nsmd.errors import NsmdError
from nsmd.identity.svid import BUNDLE, SVID_CERT, SVID_KEY, Svid, load_svid_dir

POLL_S = 1.0
log = logging.getLogger("nsmd.identity")


class FileIdentity:
    def __init__(self, directory: str, poll_s: float = POLL_S):
        self.directory = directory
        self.poll_s = poll_s
        self.svid: Svid | None = None
        self.on_update: list[Callable[[Svid], object]] = []
        self._seen: tuple = ()
        self._task: asyncio.Task | None = None
        self._failing = False

    async def start(self) -> Svid:
        self._seen = self._signature()
        self.svid = load_svid_dir(self.directory)
        self._task = asyncio.ensure_future(self._watch())
        return self.svid

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def check(self) -> bool:
        """Loads the files again if they changed; True if a new SVID was taken."""
        seen = self._signature()
        if seen == self._seen:
            return False
        try:
            svid = load_svid_dir(self.directory)
        except NsmdError as err:
            if not self._failing:
                log.error("identity-dir %s changed but cannot be used yet (%s); keeping the "
                          "SVID in use", self.directory, err)
            self._failing = True
            return False
        self._seen, self._failing = seen, False
        if self.svid is not None and svid.chain[0] == self.svid.chain[0] \
                and svid.bundle == self.svid.bundle:
            return False
        self.svid = svid
        log.info("SVID reloaded from %s: %s, valid until %s", self.directory, svid.spiffe_id,
                 svid.not_after)
        for listener in self.on_update:
            listener(svid)
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.check()

    def _signature(self) -> tuple:
        out: list[tuple[int, int, int] | None] = []
        for name in (SVID_CERT, SVID_KEY, BUNDLE):
            try:
                st = os.stat(os.path.join(self.directory, name))
            except OSError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)
