"""The registry: network services and endpoints, with expiry and watch."""

from nsmd.registry.query import EndpointQuery, ServiceQuery
from nsmd.registry.registry import DEFAULT_NSE_EXPIRY_S, Registry
from nsmd.registry.view import PermissionDenied, RegistryView
from nsmd.registry.watch import Overflowed, Watch, WatchEvent

__all__ = ["DEFAULT_NSE_EXPIRY_S", "EndpointQuery", "Overflowed", "PermissionDenied",
           "Registry", "RegistryView", "ServiceQuery", "Watch", "WatchEvent"]
