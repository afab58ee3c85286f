"""Dataclasses <-> plain data (dicts, lists, strings) for JSON, YAML and msgpack.

Driven by type hints, so each model class states its fields once. Decoding validates as it
goes and every error names the field (`spec.matches[1].routes`) and what was expected there.
Timestamps are float seconds in memory and RFC 3339 strings on the wire, as protobuf's JSON
mapping writes them; numbers (epoch seconds) are accepted too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import types
import typing
from typing import Any

from nsmd.errors import ValidationError

MSGPACK = "application/msgpack"  # the content type of msgpack bodies (daemons use it)


def field(*, wire: str | None = None, time: bool = False, choices: tuple[str, ...] = (),
          default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with its wire name, timestamp flag or allowed values."""
    metadata = {"wire": wire, "time": time, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def to_wire(obj: Any) -> Any:
    """Plain data for `obj` (a model dataclass, or lists/dicts of them)."""
    kind = type(obj)
    if kind is str or kind is int or kind is float or kind is bool or obj is None:
        return obj
    plan = _wire_plans[kind] if kind in _wire_plans else _wire_plan(kind)
    if plan is None:
        if isinstance(obj, list | tuple):
            return [to_wire(v) for v in obj]
        if isinstance(obj, dict):
            return {k: to_wire(v) for k, v in obj.items()}
        return obj  # other scalars (enums are str)
    out = {}
    for name, wire_name, how in plan:
        value = getattr(obj, name)
        if how is _AS_IS or value is None:
            out[wire_name] = value
        elif how is _TIME:
            out[wire_name] = format_time(value)
        elif how is _LIST_OF_SCALARS:
            out[wire_name] = list(value)
        elif how is _DICT_OF_SCALARS:
            out[wire_name] = dict(value)
        else:
            out[wire_name] = to_wire(value)
    return out


# How to_wire turns a field into plain data, from its type hint: scalars as they are,
# lists and mappings of scalars copied in C, everything else walked. (The registry's Find
# turns thousands of endpoints into plain data per second.)
_AS_IS, _TIME, _LIST_OF_SCALARS, _DICT_OF_SCALARS, _WALK = \
    "as is", "time", "list of scalars", "dict of scalars", "walk"
_SCALARS = (str, int, float, bool)


def _wire_plan(kind: type) -> tuple[tuple[str, str, str], ...] | None:
    """(attribute, wire name, how) per field of a model class, worked out once."""
    plan = None if not dataclasses.is_dataclass(kind) else tuple(
        (f.name, f.metadata.get("wire") or f.name, _how_to_wire(f, _hints(kind)[f.name]))
        for f in dataclasses.fields(kind))
    _wire_plans[kind] = plan
    return plan


def _how_to_wire(f: dataclasses.Field, hint: Any) -> str:
    if f.metadata.get("time"):
        return _TIME
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else Any
    args = typing.get_args(hint)
    if hint in _SCALARS:
        return _AS_IS
    if typing.get_origin(hint) is list and args[0] in _SCALARS:
        return _LIST_OF_SCALARS
    if typing.get_origin(hint) is dict and args[0] in _SCALARS and args[1] in _SCALARS:
        return _DICT_OF_SCALARS
    return _WALK


_wire_plans: dict[type, tuple[tuple[str, str, str], ...] | None] = {}


def from_wire(cls: type, data: Any, where: str = "") -> Any:
    """Builds `cls` from plain data; raises ValidationError naming the bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError(where, "an object (mapping)", data)
    fields = _wire_fields(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValidationError(
            _join(where, str(unknown[0])), f"one of the known fields ({', '.join(fields)})",
            detail=f"{_join(where, str(unknown[0]))}: unknown field; known fields are "
                   f"{', '.join(fields)}")
    hints = _hints(cls)
    kwargs = {}
    for wire_name, f in fields.items():
        if wire_name not in data or data[wire_name] is None:
            continue
        path = _join(where, wire_name)
        value = data[wire_name]
        if f.metadata.get("time"):
            kwargs[f.name] = parse_time(value, path)
            continue
        kwargs[f.name] = _convert(hints[f.name], value, path)
        choices = f.metadata.get("choices")
        if choices and kwargs[f.name] not in choices:
            raise ValidationError(path, f"one of {', '.join(choices)}", value)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    if hint is Any:  # free-form (plugin config): passed through as decoded
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _convert(inner[0], value, path)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_wire(hint, value, path)
    if origin is list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValidationError(path, "a list", value)
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValidationError(path, "a mapping", value)
        return {_convert(str, k, path): _convert(args[1], v, f"{path}.{k}")
                for k, v in value.items()}
    if hint is str:
        if not isinstance(value, str):
            raise ValidationError(path, "a string (quote it in YAML)", value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValidationError(path, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(path, "a non-negative integer", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(path, "a number", value)
        return float(value)
    raise TypeError(f"codec cannot handle {hint!r} at {path}")


def copy_model(obj: Any) -> Any:
    """A deep copy of a model object, several times faster than copy.deepcopy (which walks
    __reduce_ex__ for every node). Strings, numbers and enums are shared: immutable."""
    if obj is None or isinstance(obj, str | int | float):
        return obj
    if type(obj) is list:
        return [copy_model(v) for v in obj]
    if type(obj) is dict:
        return {k: copy_model(v) for k, v in obj.items()}
    cls: Any = type(obj)
    new = object.__new__(cls)
    for name in _field_names(cls):
        object.__setattr__(new, name, copy_model(getattr(obj, name)))
    return new


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def format_time(seconds: float | None) -> str | None:
    """RFC 3339 in UTC with microseconds, as datetime's isoformat writes it (its rounding
    too). The date and time of day come from a small cache by whole second: a registry
    Find formats two timestamps per endpoint, and most share their second."""
    if not seconds:
        return None
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1
        micros -= 1_000_000
    prefix = _SECONDS.get(whole)
    if prefix is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        prefix = _SECONDS[whole] = \
            dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{micros:06d}Z"


_SECONDS: dict[float, str] = {}


def parse_time(value: Any, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):  # YAML decodes unquoted timestamps itself
        return value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp()
    if isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return stamp.replace(tzinfo=stamp.tzinfo or dt.UTC).timestamp()
    raise ValidationError(path, "an RFC 3339 timestamp or epoch seconds", value)


@functools.cache
def _wire_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.metadata.get("wire") or f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
