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
import zlib
from typing import Any, Generic, TypeVar

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


class Packer(Generic[T]):
    """pack/unpack for many objects of one kind that look alike (a daemon's connections).

    Each is also deflated against the first one this packer made: the same names,
    namespaces, labels and structure are then back-references, and what remains is mostly
    the ids. ~500 -> ~150 bytes for a connection, ~8 us more to keep one and ~3 us more to
    read one. The dictionary never changes, so every packed object stays readable.
    """

    # A 2 KiB window: the dictionary and one object fit it; zlib's default (32 KiB with
    # 256 KiB of state) made each compression cost 100 us in allocating alone.
    _WBITS, _MEMLEVEL = -11, 2

    def __init__(self, kind: type[T]):
        self.kind = kind
        self._zdict = b""

    def pack(self, obj: T) -> bytes:
        raw = pack(self.kind, obj)
        if not self._zdict:
            self._zdict = raw
        deflate = zlib.compressobj(1, zlib.DEFLATED, self._WBITS, self._MEMLEVEL,
                                   zdict=self._zdict)
        return deflate.compress(raw) + deflate.flush()

    def unpack(self, data: bytes) -> T:
        return unpack(self.kind, zlib.decompressobj(self._WBITS, zdict=self._zdict)
                      .decompress(data))


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
