"""Model objects packed for keeping: what a daemon holds per connection for hours.

A Connection as a tree of dataclasses, dicts and lists costs ~2 KiB of heap. Packed, it is
one bytes object of ~500 bytes: msgpack arrays in field order (no field names), through a
msgspec Struct made from each model dataclass's type hints (the model is still written
once, in model/). msgspec converts and encodes in C: unpacking is ~5x faster than the deep
copy that handing out a stored object needed. Packed data is our own, not validated again
beyond the types msgspec checks.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encode = msgspec.msgpack.Encoder().encode


def pack(kind: type[T], obj: T) -> bytes:
    """`obj` of `kind` (a model class, or e.g. list[Mechanism]) as compact bytes."""
    return _encode(msgspec.convert(obj, _codec(kind)[0], from_attributes=True))


def unpack(kind: type[T], data: bytes) -> T:
    """A fresh object of `kind` from pack's bytes."""
    obj: T = msgspec.convert(_codec(kind)[1].decode(data), kind, from_attributes=True)
    return obj


_codecs: dict[Any, tuple[Any, msgspec.msgpack.Decoder]] = {}
_mirrors: dict[type, type[msgspec.Struct]] = {}


def _codec(kind: Any) -> tuple[Any, msgspec.msgpack.Decoder]:
    found = _codecs.get(kind)
    if found is None:  # once per kind: making one reads the type hints
        mirror = _mirror_hint(kind)
        found = _codecs[kind] = (mirror, msgspec.msgpack.Decoder(mirror))
    return found


def _mirror_hint(hint: Any) -> Any:
    """`hint` with every model dataclass in it replaced by its array-like Struct."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _mirror(hint)
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return types.GenericAlias(origin, tuple(_mirror_hint(a) for a in args))
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(operator.or_, (_mirror_hint(a) for a in args))
    return hint


def _mirror(cls: type) -> type[msgspec.Struct]:
    if cls not in _mirrors:
        hints = typing.get_type_hints(cls)
        _mirrors[cls] = msgspec.defstruct(
            f"Packed{cls.__name__}", [(f.name, _mirror_hint(hints[f.name]))
                                      for f in dataclasses.fields(cls)],
            array_like=True, gc=False)
    return _mirrors[cls]
