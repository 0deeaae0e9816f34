"""The key=value override walk shared by the model, GRPO and SFT configs, and the checks every run
config makes before anything heavy runs: unknown keys at any depth (named in full, `optimizer.lr`,
with the closest valid key), the structure of a config against its defaults, and enumerated values.

    override(c, {"optimizer": {"lr": 1e-6}}, "grpo config")
    # KeyError: grpo config: unknown key 'optimizer.lr'; did you mean 'optimizer.learning_rate'?

Open fields (`open`): ConfigDicts whose keys are not fixed by the defaults (a GRPO config's
`loss_kwargs`, checked against the loss's signature; an SFT config's `model`, checked against the
model config's keys); `replace` fields are replaced as a whole (GRPO's `rewards`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import ml_collections

OPEN = object()  # a schema leaf whose dict value may hold any keys (checked elsewhere)


class ConfigKeyError(KeyError, ValueError):
    """An unknown (or missing) config key: a KeyError (as before) and a ValueError (as the other config
    errors); str() is the message itself (KeyError's would repr-quote it)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _is_map(x) -> bool:
    return isinstance(x, (Mapping, ml_collections.ConfigDict))


def closest(key: str, candidates) -> str | None:
    """The valid key `key` most likely meant: the same up to case, an abbreviation by initials
    (`lr` -> `learning_rate`), the closest by difflib, or one that contains it; None if none is close."""
    cands = [str(c) for c in candidates]
    low = {c.lower(): c for c in cands}
    if key.lower() in low:
        return low[key.lower()]
    for c in cands:
        parts = [p for p in c.split("_") if p]
        if len(parts) > 1 and "".join(p[0] for p in parts) == key.lower():
            return c
    m = difflib.get_close_matches(key, cands, n=1, cutoff=0.6)
    if m:
        return m[0]
    inside = [c for c in cands if len(key) >= 3 and (key.lower() in c.lower() or c.lower() in key.lower())]
    return inside[0] if len(inside) == 1 else None


def unknown_key(what: str, dotted: str, candidates, prefix: str = "") -> ConfigKeyError:
    """The error for an unknown key `dotted` (`prefix` + its last part) among `candidates`."""
    leaf = dotted[len(prefix):] if prefix and dotted.startswith(prefix) else dotted.rsplit(".", 1)[-1]
    cands = sorted(str(c) for c in candidates)
    m = closest(leaf, cands)
    if m is not None:
        hint = f"; did you mean {prefix + m!r}?"
    else:
        hint = f"; valid keys{' of ' + prefix[:-1] if prefix else ''}: {', '.join(cands)}" if cands else ""
    return ConfigKeyError(f"{what}: unknown key {dotted!r}{hint}")


def check_choice(what: str, key: str, value, choices, *, allow_empty: bool = False) -> None:
    """ValueError naming `key`, its `value` and the valid `choices` unless value is one of them
    (or "" with allow_empty)."""
    if allow_empty and value == "":
        return
    if value not in tuple(choices):
        valid = " | ".join(repr(c) for c in (("",) if allow_empty else ()) + tuple(choices))
        raise ValueError(f"{what}: {key}={value!r} is not one of {valid}")


def override(c: ml_collections.ConfigDict, kw, what: str = "config", replace: tuple = (), open: tuple = (),
             prefix: str = "", schema: Mapping | None = None) -> ml_collections.ConfigDict:
    """THE way a config changes (model, optimizer, mesh, GRPO, SFT, toy stages, the CLI's --set):
    sets c[k] = v for each item of `kw`; an unknown key, at any depth, raises ConfigKeyError naming
    `what`, the full dotted key and the closest valid one. A dict value for a ConfigDict field updates
    it key by key (recursively), except for the fields in `replace` (dotted names), which it replaces,
    and those in `open`, which take any key. A value of the wrong type for its field (a str for an
    int) raises ValueError naming the key. `schema` (schema_of of the config the value will become):
    a key the schema has but `c` lacks (a partial block of an experiment file) is set as given."""
    if isinstance(c, ml_collections.FrozenConfigDict):
        raise TypeError(f"{what}: the config is frozen (a model config from make_config): make a changed copy "
                        "with r1jax.config.replace(cfg, key=value)")
    for k, v in kw.items():
        dotted = prefix + str(k)
        sub = schema.get(k) if isinstance(schema, Mapping) else None
        if k not in c:
            if not (isinstance(schema, Mapping) and k in schema):
                raise unknown_key(what, dotted, set(c.keys()) | set(schema.keys() if isinstance(schema, Mapping)
                                                                    else ()), prefix)
            c[k] = ml_collections.ConfigDict() if _is_map(v) else v
            if not _is_map(v):
                continue
        cur = c[k]
        if isinstance(cur, ml_collections.ConfigDict) and _is_map(v):
            if dotted in replace:
                c[k] = ml_collections.ConfigDict(dict(v.items()))
            elif dotted in open or sub is OPEN:
                _merge_open(cur, v)
            else:
                override(cur, v, what, replace, open, prefix=dotted + ".", schema=sub)
        else:
            try:
                c[k] = v
            except TypeError as e:  # ConfigDict keeps each field's type
                raise ValueError(f"{what}: {dotted}={v!r} has the wrong type for the key ({e})") from None
    return c


def _merge_open(cur: ml_collections.ConfigDict, v) -> None:
    """An open block's keys set without checks (the stage checks them); a dict into a dict merges."""
    for kk, vv in v.items():
        if kk in cur and isinstance(cur[kk], ml_collections.ConfigDict) and _is_map(vv):
            _merge_open(cur[kk], vv)
        else:
            cur[kk] = vv


def schema_of(c, open: tuple = (), prefix: str = "") -> dict:
    """A config's defaults as a nested dict of its keys (the schema `check_keys` reads); the
    fields in `open` (dotted names) become OPEN (any keys)."""
    out = {}
    for k, v in c.items():
        dotted = prefix + str(k)
        if dotted in open:
            out[k] = OPEN
        elif _is_map(v):
            out[k] = schema_of(v, open, dotted + ".")
        else:
            out[k] = v
    return out


def check_keys(c, schema: Mapping, what: str, prefix: str = "", *, complete: bool = False) -> None:
    """Every key of `c` (at any depth) is one of `schema`'s (schema_of); a dict value where the
    schema has a dict is checked inside it, an OPEN field takes any keys. complete=True: `c` must
    also hold every key of the schema (a dict assigned to a ConfigDict attribute replaces it whole,
    dropping the keys it does not set)."""
    for k in c.keys():
        dotted = prefix + str(k)
        if k not in schema:
            raise unknown_key(what, dotted, schema.keys(), prefix)
        s = schema[k]
        if s is OPEN or not _is_map(s):
            continue
        v = c[k]
        if _is_map(v):
            check_keys(v, s, what, dotted + ".", complete=complete)
    if complete:
        missing = [str(k) for k in schema if k not in c]
        if missing:
            where = prefix[:-1] if prefix else "the config"
            raise ConfigKeyError(f"{what}: {where} has no {', '.join(repr(prefix + m) for m in missing)} (a dict "
                                 f"assigned to a config field replaces it whole: set its keys one by one, "
                                 f"e.g. {prefix + missing[0]!r})")
