"""The registry: network services and endpoints, with expiry and watch."""

from nsmd.registry.query import EndpointQuery, ServiceQuery
from nsmd.registry.registry import Registry
from nsmd.registry.view import RegistryView
from nsmd.registry.watch import Overflowed, Watch, WatchEvent

__all__ = ["EndpointQuery", "Overflowed", "Registry", "RegistryView",
           "ServiceQuery", "Watch", "WatchEvent"]
