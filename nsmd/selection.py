"""NSM's endpoint selection: label templates, subset checks and the match walk.

Same semantics as NSM's sdk (pkg/tools/matchutils, common/discover):
- selector values are Go-template-like over the client's labels (`{{.nodeName}}`); a value
  that is not a plain `{{.key}}` template is taken literally; a missing key renders as
  `<no value>`, which no real label equals;
- the first match whose source_selector is a subset of the client's labels decides; with
  `fallthrough` an empty result moves on to the next match;
- no matches at all: every endpoint of the service is a candidate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from nsmd.model import NetworkService, NetworkServiceEndpoint

_ACTION = re.compile(r"\{\{(.*?)\}\}")
_FIELD = re.compile(r"^\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*$")
NO_VALUE = "<no value>"


def render(value: str, variables: Mapping[str, str]) -> str:
    """Expands `{{.key}}` actions in `value` from `variables`; anything else stays literal."""
    if "{{" not in value:
        return value
    out = []
    pos = 0
    for action in _ACTION.finditer(value):
        field = _FIELD.match(action.group(1))
        if field is None:
            return value  # not a template we understand: Go would fail to parse, NSM keeps it
        out.append(value[pos:action.start()])
        out.append(variables.get(field.group(1), NO_VALUE))
        pos = action.end()
    out.append(value[pos:])
    return "".join(out)


def is_subset(labels: Mapping[str, str], selector: Mapping[str, str],
              variables: Mapping[str, str]) -> bool:
    """True if every selector entry is in `labels`, after template expansion.

    Like Go's map lookup, a missing label reads as "" (so a selector value "" matches it).
    """
    if len(labels) < len(selector):
        return False
    for key, want in selector.items():
        have = labels.get(key, "")
        if have != want and have != render(want, variables):
            return False
    return True


def candidates(service: NetworkService, endpoints: Iterable[NetworkServiceEndpoint],
               client_labels: Mapping[str, str]) -> list[NetworkServiceEndpoint]:
    """Endpoints the service's matches allow for this client, in match/route order.

    An endpoint selected by two routes appears twice: NSM's implicit weighting.
    """
    endpoints = list(endpoints)
    if not service.matches:
        return endpoints
    for match in service.matches:
        if not is_subset(client_labels, match.source_selector, client_labels):
            continue
        found = [
            nse
            for route in match.routes
            for nse in endpoints
            if is_subset(nse.labels_for(service.name), route.destination_selector, client_labels)
        ]
        if match.fallthrough and not found:
            continue
        if match.metadata is not None and not match.routes and not found:
            return endpoints
        return found
    return []
