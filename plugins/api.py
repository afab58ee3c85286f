"""The network service function API: what a function plugin provides, and how nsmd finds it.

A function is a class registered under the entry-point group `nsmd.functions`, e.g. in a
plugin's pyproject.toml:

    [project.entry-points."nsmd.functions"]
    firewall = "nsmd.plugins.firewall:Firewall"

Built-ins are registered the same way and use nothing but this module and the stage ABI
(`nsmd.fastpath.stage`). An endpoint's `spec.nsmd.functions` lists them, in the order
packets from the client meet them (the way back runs in reverse):

    functions:
      - {name: firewall, config: {default: deny, rules: [{action: allow, proto: icmp}]}}

Everything here runs on the daemon's event loop, never per packet (docs/plugins.md):

- parse: `config` is decoded into the function's `Config` dataclass by nsmd's codec, so
  an error names its field (`spec.nsmd.functions[0].config.rules[2].ports`); `check()`
  then validates across fields. A bad config refuses the whole manifest: nothing changes.
- request(conn): on the endpoint's side, once the vWire's addresses are chosen and before
  it is built; may add routes or excluded prefixes to the connection's IP context.
- attach(conn): the per-vWire part (a VWireFunction), whose stage the engine runs over
  both directions of that vWire; None if the function never touches packets.
- VWireFunction.flush() runs every FLUSH_INTERVAL_S for slow-path work (the capture
  writing its ring to disk); stats() gives counters; close() ends it with its vWire.
- host: what the daemon lends a function (a FunctionHost), set before the first attach:
  a directory of its own for files (`files_dir(name)`) and the operator's size limit on
  any one file. A function writes nowhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from nsmd.errors import ValidationError
from nsmd.model import Connection
from nsmd.model.codec import from_wire

ENTRY_POINT_GROUP = "nsmd.functions"
FLUSH_INTERVAL_S = 0.25


class VWireFunction(Protocol):
    """A function's part on one vWire: its stage (both directions) and counters."""

    def stage_capsule(self) -> object:
        """A `nsmd.fastpath.stage.Stage` capsule (stage.pxd); this object keeps it alive."""
        ...

    def stats(self) -> dict[str, int]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class FunctionHost:
    """What the daemon lends its functions: its state directory, in which each function may
    keep files in a directory named after it, and the largest file it may write there."""

    state_dir: str
    max_file_bytes: int

    def files_dir(self, function: str) -> str:
        return os.path.join(self.state_dir, function)


class Function:
    """Base of network service functions; one instance per endpoint and `functions` entry."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]  # a dataclass of the config's fields (nsmd.model.codec.field)
    host: FunctionHost | None = None  # set by the daemon before the first attach

    def __init__(self, config: Any, where: str):
        self.config = config
        self.where = where

    @classmethod
    def parse(cls, raw: Any, where: str) -> Function:
        config = from_wire(cls.Config, raw, f"{where}.config")
        function = cls(config, where)
        function.check()
        return function

    def check(self) -> None:
        """Cross-field validation; raise ValidationError(f"{self.where}.config.FIELD", ...)."""

    def request(self, conn: Connection) -> None:
        """Adjusts the connection's context on the endpoint's side (routes, prefixes)."""

    def attach(self, conn: Connection) -> VWireFunction | None:
        """The per-vWire part for `conn` (its stage), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """What `nsmd get endpoints` shows of this function (its effective config)."""
        return {}


def check_seconds(config: Any, where: str, *keys: str, lowest: float = 1,
                  highest: float = 86400) -> None:
    """Each of config's `keys` is a duration within [lowest, highest] seconds."""
    for key in keys:
        value = getattr(config, key)
        if not lowest <= value <= highest:
            raise ValidationError(f"{where}.config.{key}", f"{lowest:g} to {highest:g} seconds",
                                  value)


@functools.cache
def available() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


@functools.cache
def function_class(name: str) -> type[Function]:
    entry = available().get(name)
    if entry is None:
        raise KeyError(name)
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Function)):
        raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not a Function")
    return cls


def parse_function(name: str, raw: Any, where: str) -> Function:
    """The function `name` with its config, or a ValidationError naming what is wrong."""
    try:
        cls = function_class(name)
    except KeyError:
        known = ", ".join(sorted(available())) or "none installed"
        raise ValidationError(f"{where}.name", f"a network service function ({known})",
                              name) from None
    except (ImportError, TypeError) as err:
        raise ValidationError(f"{where}.name", "a function plugin that loads",
                              detail=f"{where}.name: plugin {name!r} is broken: {err}") from None
    return cls.parse(raw, where)


def parse_functions(entries: Iterable[Any], where: str) -> list[Function]:
    """Every entry (with .name and .config) of an endpoint's `functions`, configs checked;
    `where` prefixes the field names (`...spec.nsmd.`)."""
    return [parse_function(e.name, e.config, f"{where}functions[{i}]")
            for i, e in enumerate(entries)]
