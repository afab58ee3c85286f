"""Mutual TLS between daemons from X.509 SVIDs (stdlib ssl, asyncio and uvloop alike).

OpenSSL verifies the peer's chain against our trust bundle during the handshake; the
peer's SPIFFE ID is then checked against policy inside the handshake itself (an
SSLObject subclass), so a peer outside policy never gets to send a request. Host names
are not checked: SPIFFE IDs are the identity.

Every change of SVID or bundle builds fresh contexts (TlsContexts): OpenSSL can add trust
anchors to a context but never drop one, so a CA removed from the bundle would otherwise
stay trusted until a restart. The listener keeps one front context and moves each new
handshake onto the current one from its SNI callback (called with or without SNI).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from spiffe import SpiffeId

from nsmd.identity.federation import Bundles, issued_by_bundle
from nsmd.identity.svid import IdentityError, Svid, spiffe_id_of


class PeerPolicy:
    """Who may talk to us: any ID in our trust domain (or a federated one), or only the
    listed ones (an entry "spiffe://TD", without a path, lists all of that trust domain).
    With federation, a peer's certificate must come from a CA of its own trust domain's
    bundle."""

    def __init__(self, trust_domain: str, allowed: frozenset[str] = frozenset(),
                 federated: Bundles | None = None,
                 own_bundle: tuple[x509.Certificate, ...] = ()):
        self.trust_domain = trust_domain
        self.allowed = allowed
        self.federated = federated or {}
        self.own_bundle = own_bundle

    def check(self, peer: SpiffeId, leaf: x509.Certificate | None = None) -> None:
        domain = peer.trust_domain.name
        if domain != self.trust_domain and domain not in self.federated:
            raise IdentityError(f"peer {peer} is not in trust domain {self.trust_domain}"
                                + (" or a federated one" if self.federated else ""))
        if self.federated and leaf is not None:
            bundle = self.own_bundle if domain == self.trust_domain else self.federated[domain]
            if not issued_by_bundle(leaf, bundle):
                raise IdentityError(f"peer {peer}'s certificate is not from a CA of trust "
                                    f"domain {domain}")
        if self.allowed and str(peer) not in self.allowed and \
                f"spiffe://{domain}" not in self.allowed:
            raise IdentityError(f"peer {peer} is not among the allowed peers "
                                f"({', '.join(sorted(self.allowed))})")


def _sslobject_class(policy: PeerPolicy) -> type[ssl.SSLObject]:
    class SpiffeSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            der = self.getpeercert(binary_form=True)
            try:
                if der is None:
                    raise IdentityError("peer sent no certificate")
                leaf = x509.load_der_x509_certificate(der)
                policy.check(spiffe_id_of(leaf), leaf)
            except IdentityError as err:
                raise ssl.SSLError(ssl.SSL_ERROR_SSL, f"SPIFFE policy: {err}") from None

    return SpiffeSSLObject


def peer_certificate(ssl_object: ssl.SSLObject | None) -> x509.Certificate:
    """The leaf certificate the peer of an established connection presented."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if der is None:
        raise IdentityError("no peer certificate on this connection")
    return x509.load_der_x509_certificate(der)


def peer_spiffe_id(ssl_object: ssl.SSLObject | None) -> SpiffeId:
    """The SPIFFE ID of the peer of an established connection."""
    return spiffe_id_of(peer_certificate(ssl_object))


class TlsContexts:
    """Our SVID as TLS contexts: the listener's, and one per peer ID we expect to reach
    (the handshake fails unless the peer is exactly that ID); rebuilt on update()."""

    def __init__(self, svid: Svid, federated: Bundles | None = None):
        self.svid = svid
        self.trust_domain = svid.spiffe_id.trust_domain.name
        self.configured = dict(federated or {})  # --federate files
        self._listener_policy: PeerPolicy | None = None
        self._server = self._context(server=True)
        self._clients: dict[str, ssl.SSLContext] = {}
        # The front context's SSLObject class stays the one asyncio made its connections
        # with, so its policy must be the current one, not the one of its creation.
        self.listener = make_context(svid, _CurrentPolicy(self), server=True)
        self.listener.sni_callback = self._current_server

    def client(self, expect: str = "") -> ssl.SSLContext:
        """A client context for calls to `expect` ("" = any ID of our trust domain or a
        federated one; "spiffe://TD" = any of that trust domain). The same object until
        the next update(), so pooled connections are reused; after it, calls use new
        connections made with the new SVID and bundle."""
        ctx = self._clients.get(expect)
        if ctx is None:
            allowed = frozenset({expect}) if expect else frozenset()
            ctx = self._context(server=False, allowed=allowed)
            self._clients[expect] = ctx
        return ctx

    @property
    def federated(self) -> Bundles:
        """Other trust domains' roots: the SVID source's federated bundles and the
        --federate files (whose CAs are added to the source's for the same domain)."""
        merged = dict(self.svid.federated)
        for td, bundle in self.configured.items():
            merged[td] = merged.get(td, ()) + bundle
        merged.pop(self.trust_domain, None)
        return merged

    def update(self, svid: Svid) -> bool:
        """Switches to `svid` and its bundle; True if a CA was removed from the bundle."""
        removed = {c.fingerprint(hashes.SHA256()) for c in self.svid.bundle} - {
            c.fingerprint(hashes.SHA256()) for c in svid.bundle}
        self.svid = svid
        self._listener_policy = None
        self._server = self._context(server=True)
        self._clients = {}
        return bool(removed)

    def policy(self) -> PeerPolicy:
        """The listener's policy for the current SVID and bundles (built once per change)."""
        if self._listener_policy is None or self._listener_policy.own_bundle is not \
                self.svid.bundle:
            self._listener_policy = PeerPolicy(self.trust_domain, frozenset(), self.federated,
                                               self.svid.bundle)
        return self._listener_policy

    def _context(self, server: bool, allowed: frozenset[str] = frozenset()) -> ssl.SSLContext:
        federated = self.federated
        policy = PeerPolicy(self.trust_domain, allowed, federated, self.svid.bundle)
        ctx = make_context(self.svid, policy, server)
        for bundle in federated.values():
            ctx.load_verify_locations(cadata="".join(
                c.public_bytes(serialization.Encoding.PEM).decode() for c in bundle))
        return ctx

    def _current_server(self, ssl_object: ssl.SSLObject, _name: str | None,
                        _front: ssl.SSLContext) -> None:
        ssl_object.context = self._server


class _CurrentPolicy(PeerPolicy):
    """The listener's policy: whatever the current SVID and bundles say."""

    def __init__(self, contexts: TlsContexts):
        self.contexts = contexts

    def check(self, peer: SpiffeId, leaf: x509.Certificate | None = None) -> None:
        self.contexts.policy().check(peer, leaf)


def make_context(svid: Svid, policy: PeerPolicy, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.sslobject_class = _sslobject_class(policy)
    load_svid(ctx, svid)
    return ctx


def load_svid(ctx: ssl.SSLContext, svid: Svid) -> None:
    """(Re)loads our certificate, key and trust bundle into `ctx` (used on rotation)."""
    with _memfile(svid.chain_pem()) as cert_path, _memfile(svid.key_pem()) as key_path:
        ctx.load_cert_chain(cert_path, key_path)
    ctx.load_verify_locations(cadata=svid.bundle_pem())


@contextlib.contextmanager
def _memfile(data: bytes) -> Iterator[str]:
    """A path to `data` that never touches a disk (memfd), for APIs that want file names."""
    fd = os.memfd_create("nsmd-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
