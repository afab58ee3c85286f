"""This daemon's identity: its SVID from files or a Workload API, kept current, and what is
derived from it (TLS contexts, the token signer).

A rotation keeps the SPIFFE ID: an update that changes it is refused (the ID names this
daemon in every registry record and token it made). Listeners hear of every change with
whether a CA left the bundle, so connections authenticated by that CA can be closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from nsmd import defaults
from nsmd.identity import tokens
from nsmd.identity.federation import Bundles, load_bundles
from nsmd.identity.files import FileIdentity
from nsmd.identity.svid import Svid
from nsmd.identity.tls import TlsContexts
from nsmd.identity.workload import WorkloadIdentity

log = logging.getLogger("nsmd.identity")


class Source(Protocol):
    on_update: list[Callable[[Svid], object]]

    async def start(self) -> Svid: ...

    def close(self) -> None: ...


class Identity:
    def __init__(self, source: Source, token_lifetime_s: float = defaults.TOKEN_LIFETIME_S,
                 federated: Bundles | None = None):
        self.source = source
        self.federated = federated or {}  # other trust domains' bundles (--federate)
        self.token_lifetime_s = token_lifetime_s
        # Called with ca_removed after every change, once the new contexts are in place.
        self.on_change: list[Callable[[bool], object]] = []

        self.where = ""   # the directory or Workload API it comes from (for status)

    @classmethod
    def from_config(cls, identity_dir: str, spiffe_socket: str,
                    token_lifetime_s: float, federate: str = "") -> Identity:
        source: Source = (WorkloadIdentity(spiffe_socket) if spiffe_socket
                          else FileIdentity(identity_dir))
        identity = cls(source, token_lifetime_s, load_bundles(federate))
        identity.where = spiffe_socket or identity_dir
        return identity

    async def start(self) -> None:
        svid = await self.source.start()
        self.tls = TlsContexts(svid, self.federated)
        self.signer = tokens.Signer(lambda: self.tls.svid, self.token_lifetime_s)
        self.source.on_update.append(self._rotated)
        log.info("identity %s (valid until %s)", svid.spiffe_id, svid.not_after)

    def close(self) -> None:
        self.source.close()

    @property
    def svid(self) -> Svid:
        return self.tls.svid

    @property
    def spiffe_id(self) -> str:
        return str(self.tls.svid.spiffe_id)

    @property
    def trust_domain(self) -> str:
        return self.tls.trust_domain

    def svid_pem(self) -> tuple[bytes, bytes]:
        """The current SVID as PEM: (certificate chain, key)."""
        return self.svid.chain_pem(), self.svid.key_pem()

    @property
    def trust_domains(self) -> frozenset[str]:
        """Ours and the federated ones: whose IDs may appear in a path's tokens."""
        return frozenset({self.tls.trust_domain, *self.tls.federated})

    def describe(self) -> dict:
        """What `nsmd status` shows of it."""
        leaf = self.svid.chain[0]
        return {"spiffe_id": self.spiffe_id, "serial": format(leaf.serial_number, "x"),
                "not_after": leaf.not_valid_after_utc.isoformat(),
                "bundle_cas": len(self.svid.bundle), "source": self.where}

    def _rotated(self, svid: Svid) -> None:
        if svid.spiffe_id != self.tls.svid.spiffe_id:
            log.error("the identity source changed our SPIFFE ID (%s -> %s); keeping the old "
                      "SVID", self.tls.svid.spiffe_id, svid.spiffe_id)
            return
        ca_removed = self.tls.update(svid)
        log.info("identity updated: certificate %x valid until %s%s",
                 svid.chain[0].serial_number, svid.not_after,
                 "; a CA left the bundle" if ca_removed else "")
        for listener in self.on_change:
            listener(ca_removed)
