"""Quotas: how much of this daemon one peer daemon or local user may hold at once, so that
no single caller, however well authenticated, can use it up. Exceeding one is a 429 that
names it (`{"error": "quota NAME exceeded: ...", "quota": NAME}`); nothing is created, and
`nsmd_quota_refusals_total{quota=NAME}` counts it. Each is a setting (TOML or NSMD_QUOTA_*):

    quota-connections-per-peer      vWires one peer daemon holds here            10,000
    quota-connections-per-user      vWires one local user (uid) holds here        1,000
    quota-records-per-registrant    services and endpoints one peer registered   50,000
    quota-watches-per-peer          registry watch streams one peer keeps open        16
    quota-body-bytes                a request body, but root's on the API socket  4 MiB
    quota-relays-per-peer           relayed vWires one peer holds at a --relay       256

Root on the API socket and this daemon itself are not limited.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Iterator

from nsmd.errors import NsmdError


@dataclasses.dataclass(frozen=True)
class Limits:
    connections_per_peer: int = 10_000
    connections_per_user: int = 1_000
    records_per_registrant: int = 50_000
    watches_per_peer: int = 16
    body_bytes: int = 4 << 20
    relays_per_peer: int = 256


class QuotaExceeded(NsmdError):
    status = 429

    def __init__(self, quota: str, detail: str):
        self.quota = quota
        super().__init__(f"quota {quota} exceeded: {detail}")

    def to_json(self) -> dict:
        return {"error": str(self), "quota": self.quota}


class Quotas:
    def __init__(self, limits: Limits | None = None, refused=None):
        self.limits = limits or Limits()
        self.refused = refused   # a prometheus Counter labelled by quota, or None
        self._held: collections.Counter[tuple[str, str]] = collections.Counter()

    def check(self, quota: str, used: int, who: object) -> None:
        """Raises QuotaExceeded if `who`, using `used`, may not have one more of `quota`
        (its name as in the settings, without `quota-`)."""
        limit = getattr(self.limits, quota.replace("-", "_"))
        if used >= limit:
            if self.refused is not None:
                self.refused.labels(quota).inc()
            raise QuotaExceeded(quota, f"{who} holds {used} of {limit}")

    def check_size(self, quota: str, size: int | None, who: object) -> None:
        """Raises QuotaExceeded if a body of `size` bytes (None: of unknown length) is more
        than `quota` allows."""
        limit = getattr(self.limits, quota.replace("-", "_"))
        if size is None or size > limit:
            if self.refused is not None:
                self.refused.labels(quota).inc()
            raise QuotaExceeded(quota, f"{who} sent {size or 'a body of unknown length'} "
                                f"bytes, at most {limit} are taken")

    @contextlib.contextmanager
    def hold(self, quota: str, who: str) -> Iterator[None]:
        """One more of `quota` for `who` while the block runs (a watch stream)."""
        self.check(quota, self._held[quota, who], who)
        self._held[quota, who] += 1
        try:
            yield
        finally:
            self._held[quota, who] -= 1
            if not self._held[quota, who]:
                del self._held[quota, who]
