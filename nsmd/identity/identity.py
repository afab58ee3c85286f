"""This daemon's identity: its SVID from files or a Workload API, kept current, and what is
derived from it (TLS contexts, the token signer).

A rotation keeps the SPIFFE ID: an update that changes it is refused (the ID names this
daemon in every registry record and token it made). Listeners hear of every change with
whether a CA left the bundle, so connections authenticated by that CA can be closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from nsmd import defaults
from nsmd.identity import tokens
from nsmd.identity.federation import Bundles, load_bundles
from nsmd.identity.files import FileIdentity
from nsmd.identity.svid import IdentityError, Svid, spiffe_id_of, verify_chain
from nsmd.identity.tls import TlsContexts
from nsmd.identity.workload import WorkloadIdentity

log = logging.getLogger("nsmd.identity")
TRUSTED_CHAINS = 4096  # verified chains remembered (one per daemon that began a path)


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
        # chains trust_chain verified: x5c -> (SPIFFE ID, key, valid until), kept for one
        # SVID update (an update may change the bundles: a CA may have left)
        self._trusted: dict[tuple[str, ...], tuple[str, ec.EllipticCurvePublicKey, float]] = {}
        self._trusted_for: object = None
        self._warned = 0   # the serial of the SVID whose coming expiry was logged

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

    def trust_chain(self, x5c: tuple[str, ...]) -> tokens.Trusted:
        """The SPIFFE ID and key of a certificate chain's leaf (an x5c header: base64 DER)
        if a CA of its own trust domain's bundle (ours or a federated one) issued it and it
        is valid now; IdentityError otherwise. Verified chains are remembered, until the
        leaf expires or the bundles change."""
        if self._trusted_for is not self.tls.svid:   # rotated: bundles may have changed
            self._trusted, self._trusted_for = {}, self.tls.svid
        known = self._trusted.get(x5c)
        if known is not None and known[2] > time.time():
            return known[0], known[1]
        chain = tokens.chain_of(x5c)
        domain = spiffe_id_of(chain[0]).trust_domain.name
        bundle = self.svid.bundle if domain == self.trust_domain else \
            self.tls.federated.get(domain)
        if not bundle:
            raise IdentityError(f"{domain} is neither our trust domain nor a federated one")
        spiffe_id = str(verify_chain(chain, bundle))
        key = chain[0].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise IdentityError(f"the certificate of {spiffe_id} holds no EC key")
        if len(self._trusted) >= TRUSTED_CHAINS:
            self._trusted.clear()
        self._trusted[x5c] = (spiffe_id, key, chain[0].not_valid_after_utc.timestamp())
        return spiffe_id, key

    @property
    def trust_domains(self) -> frozenset[str]:
        """Ours and the federated ones: whose IDs may appear in a path's tokens."""
        return frozenset({self.tls.trust_domain, *self.tls.federated})

    def expiry_warning(self, now: float) -> str:
        """A warning, once per SVID, when it enters the last third of its life (renewal is
        due: files renewed with `nsmd ca renew`, or SPIRE rotates it); else ""."""
        leaf = self.svid.chain[0]
        if not renewal_due(leaf, now) or self._warned == leaf.serial_number:
            return ""
        self._warned = leaf.serial_number
        left_h = (leaf.not_valid_after_utc.timestamp() - now) / 3600
        return (f"SVID {self.spiffe_id} (serial {leaf.serial_number:x}) expires in "
                f"{left_h:.1f} h, at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: renew it "
                f"({self.where or 'its source'})")

    def expiries(self) -> tuple[float, float]:
        """(the SVID's not-after, the earliest bundle CA's), epoch seconds (for metrics)."""
        return (self.svid.chain[0].not_valid_after_utc.timestamp(),
                min(c.not_valid_after_utc.timestamp() for c in self.svid.bundle))

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


def renewal_due(leaf: x509.Certificate, now: float) -> bool:
    """Whether a certificate is in the last third of its life."""
    start = leaf.not_valid_before_utc.timestamp()
    end = leaf.not_valid_after_utc.timestamp()
    return now >= end - (end - start) / 3
