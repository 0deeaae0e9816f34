"""Helpers the toy pipelines (r1_zero.py, r1.py, distill.py) share: a config as a plain dict, a
content hash of configs (the key of a cached stage), and whether a stage's run finished."""

from __future__ import annotations

import hashlib
import json
import os


def config_dict(x) -> dict:
    """A ConfigDict (or any mapping) as a plain dict."""
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def config_hash(*cfgs) -> str:
    """12 hex digits of a hash of the configs' contents (ConfigDicts, dicts, numbers, strings): the
    key of a cache folder, so that changing any setting (a preset's too) gives another folder."""
    s = json.dumps([c.to_dict() if hasattr(c, "to_dict") else c for c in cfgs], sort_keys=True, default=str)
    return hashlib.sha1(s.encode()).hexdigest()[:12]


def stage_done(stage_dir: str) -> bool:
    """Whether a stage's run in `stage_dir` finished (its final checkpoint exists)."""
    return os.path.exists(os.path.join(stage_dir, "final", "model.safetensors"))
