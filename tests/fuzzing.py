"""Hypothesis strategies for bad input: any JSON-like value, and valid documents with a
few things changed inside (a value replaced by anything, a key dropped or added, a list
item duplicated), which reach much deeper into validation than random values alone."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                      max_leaves=10)


@st.composite
def mutated(draw, template: Any, changes: tuple[int, int] = (1, 3)) -> Any:
    doc = template
    for _ in range(draw(st.integers(*changes))):
        doc = _change(draw, doc)
    return doc


def _change(draw, node: Any) -> Any:
    """A copy of `node` with one change somewhere inside it."""
    if isinstance(node, dict) and node:
        key = draw(st.sampled_from(sorted(node)))
        how = draw(st.sampled_from(("into", "into", "replace", "drop", "add")))
        out = dict(node)
        if how == "into":
            out[key] = _change(draw, node[key])
        elif how == "replace":
            out[key] = draw(values)
        elif how == "drop":
            del out[key]
        else:
            out[draw(st.text(min_size=1, max_size=12))] = draw(values)
        return out
    if isinstance(node, list) and node:
        i = draw(st.integers(0, len(node) - 1))
        how = draw(st.sampled_from(("into", "replace", "drop", "dup")))
        out = list(node)
        if how == "into":
            out[i] = _change(draw, node[i])
        elif how == "replace":
            out[i] = draw(values)
        elif how == "drop":
            del out[i]
        else:
            out.insert(i, node[i])
        return out
    return draw(values)
