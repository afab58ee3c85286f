"""Every public piece of the plugin API and the stage ABI is in docs/plugins.md."""

from __future__ import annotations

import re
from pathlib import Path

from nsmd.plugins import api

DOC = (Path(__file__).parent.parent.parent / "docs" / "plugins.md").read_text()
STAGE_PXD = (Path(__file__).parent.parent.parent / "fastpath" / "stage.pxd").read_text()


def test_every_api_member_is_documented():
    public = {name for name in vars(api) if not name.startswith("_") and
              callable(getattr(api, name)) and getattr(getattr(api, name), "__module__",
                                                          "") == api.__name__}
    public |= {name for name in vars(api.Function) if not name.startswith("_")}
    public |= {name for name in vars(api.VWireFunction) if not name.startswith("_")}
    public |= {"ENTRY_POINT_GROUP", "FLUSH_INTERVAL_S"}
    missing = sorted(n for n in public if f"`{n}" not in DOC and n not in DOC)
    assert not missing, f"not in docs/plugins.md: {missing}"


def test_every_stage_abi_name_is_documented():
    names = set(re.findall(r"^\s+(PKT_\w+|DIR_\w+)\s*=", STAGE_PXD, re.M))
    names |= set(re.findall(r"^cdef (?:struct|object) (\w+)", STAGE_PXD, re.M))
    missing = sorted(n for n in names if n not in DOC)
    assert names and not missing, f"not in docs/plugins.md: {missing}"


def test_every_builtin_is_documented():
    for name in ("firewall", "nat", "ratelimit", "capture"):
        assert f"| `{name}` |" in DOC
