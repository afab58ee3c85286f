"""X.509 SVIDs from a SPIFFE Workload API (SPIRE agent, or any implementation), kept current.

py-spiffe's X509Source streams updates on its own threads; each update is handed to the
event loop, verified here (py-spiffe does not check who signed an SVID) and given to the
listeners, which rebuild the TLS contexts. A bundle change alone (a CA added or removed,
in our trust domain or a federated one) is an update too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from spiffe import X509Source

from nsmd.errors import NsmdError
from nsmd.identity.svid import IdentityError, Svid, make_svid

START_TIMEOUT_S = 15.0
log = logging.getLogger("nsmd.identity")


class WorkloadIdentity:
    def __init__(self, socket_url: str):
        self.socket_url = socket_url
        self.svid: Svid | None = None
        self.on_update: list[Callable[[Svid], object]] = []
        self._source: X509Source | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> Svid:
        """Connects and waits for the first SVID (the source blocks: off the loop)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._source = await asyncio.to_thread(
                X509Source, socket_path=self.socket_url, timeout_in_seconds=START_TIMEOUT_S)
        except Exception as err:  # py-spiffe raises several error types
            raise NsmdError(f"no SVID from the Workload API at {self.socket_url}: {err}"
                            ) from None
        self.svid = self._current()
        self._source.subscribe_for_updates(self._updated)
        return self.svid

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def _current(self) -> Svid:
        assert self._source is not None
        context = self._source.get_x509_context()
        svid = context.default_svid
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        if bundle is None:
            raise IdentityError(f"the Workload API sent no bundle for {svid.spiffe_id}")
        own = svid.spiffe_id.trust_domain.name
        federated = {b.trust_domain.name: tuple(b.x509_authorities)
                     for b in context.x509_bundle_set.bundles if b.trust_domain.name != own}
        return dataclasses.replace(make_svid(svid.cert_chain, svid.private_key,
                                             list(bundle.x509_authorities)), federated=federated)

    def _updated(self) -> None:  # on a py-spiffe thread
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply)

    def _apply(self) -> None:
        try:
            svid = self._current()
        except (IdentityError, NsmdError, Exception) as err:
            log.error("ignoring an SVID update from the Workload API: %s", err)
            return
        if self.svid is not None and svid.chain[0] == self.svid.chain[0] \
                and svid.bundle == self.svid.bundle and svid.federated == self.svid.federated:
            return
        self.svid = svid
        log.info("SVID rotated: %s, valid until %s", svid.spiffe_id, svid.not_after)
        for listener in self.on_update:
            listener(svid)
