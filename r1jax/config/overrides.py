"""The key=value override walk shared by the model, GRPO and SFT configs."""

from __future__ import annotations

import ml_collections

def override(c: ml_collections.ConfigDict, kw: dict, what: str = "config", replace: tuple = ()) -> ml_collections.ConfigDict:
    """Sets c[k] = v for each item of `kw`; an unknown key raises KeyError naming `what`. A dict value
    for a ConfigDict field updates it key by key, except for the fields in `replace`, which it replaces."""
    for k, v in kw.items():
        if k not in c:
            raise KeyError(f"{what}: unknown key {k!r}")
        if isinstance(c[k], ml_collections.ConfigDict) and isinstance(v, dict) and k not in replace:
            for kk, vv in v.items():
                c[k][kk] = vv
        elif isinstance(c[k], ml_collections.ConfigDict) and isinstance(v, dict):
            c[k] = ml_collections.ConfigDict(v)
        else:
            c[k] = v
    return c
