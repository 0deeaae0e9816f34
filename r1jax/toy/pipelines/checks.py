"""What the toy pipelines check before their first stage runs: every key of the experiment config
(a block's keys are those of the stage config it builds: `grpo` -> r1jax.rl.config.grpo_config,
`pretrain` -> r1jax.sft.trainer.sft_config, `model` -> the model config), each stage's config
built and validated as the stage will build it, the model config, the tasks and the prompt style.
A stage that runs after minutes of pretraining must not be the first to find a typo.

    schema = dict(run_dir="", seed=0, grpo=grpo_block(), pretrain=sft_block(), model=model_block())
    check_config(c, schema, "r1-zero config", required=("run_dir", "grpo"))
    stage(c, "r1-zero config", "grpo", lambda: validate_config(grpo_config(**c.grpo)))
"""

from __future__ import annotations

from typing import Callable

from r1jax import config as config_lib
from r1jax.generation.engine import check_budget
from r1jax.rl.config import OPEN_KEYS, REPLACED_KEYS, grpo_config, validate_config
from r1jax.sft.trainer import sft_config
from r1jax.toy.tasks import TASKS


def _drop(schema: dict, keys) -> dict:
    return {k: v for k, v in schema.items() if k not in keys}


def grpo_block(set_by_pipeline=()) -> dict:
    """The keys a GRPO stage block may hold: grpo_config's, less those the pipeline sets itself."""

    return _drop(config_lib.schema_of(grpo_config(), open=OPEN_KEYS + REPLACED_KEYS), set_by_pipeline)


def sft_block(set_by_pipeline=()) -> dict:
    """The keys an SFT stage block may hold: sft_config's, less those the pipeline sets itself."""

    return _drop(config_lib.schema_of(sft_config(), open=("model",)), set_by_pipeline)


def model_block() -> dict:
    """The keys of a block of model config overrides (r1jax.config.base_config)."""
    return config_lib.schema_of(config_lib.base_config())


def check_config(c, schema: dict, what: str, *, required=(), set_by_pipeline: dict | None = None) -> None:
    """Every key of `c` at any depth is in `schema` (dotted name and the closest valid key), the
    `required` top-level keys are there, and no block sets a key the pipeline sets itself
    (`set_by_pipeline`: {"grpo.seed": "the top-level seed", ...})."""
    for dotted, source in (set_by_pipeline or {}).items():
        block, _, key = dotted.rpartition(".")
        node = c
        for p in block.split("."):
            node = node.get(p) if hasattr(node, "get") else None
            if node is None:
                break
        if node is not None and hasattr(node, "keys") and key in node.keys():
            raise ValueError(f"{what}: {dotted} is set by the pipeline ({source}): remove it from the block")
    config_lib.check_keys(c, schema, what)
    missing = [k for k in required if k not in c]
    if missing:
        raise config_lib.ConfigKeyError(f"{what}: the config has no {', '.join(map(repr, missing))}")


def stage(what: str, block: str, build: Callable):
    """Runs `build()` (a stage config built and validated as the stage builds it); its errors are
    re-raised naming the config and the block (`r1-zero config: grpo: grpo config: ...`)."""
    try:
        return build()
    except config_lib.ConfigKeyError as e:
        raise config_lib.ConfigKeyError(f"{what}: {block}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{what}: {block}: {e.args[0] if e.args else e}") from None


def grpo_stage(what: str, block: str, build: Callable, model_cfg):
    """A GRPO stage's config `build()`-ed and validated as the stage will run it, its max_new_tokens
    leaving room for a prompt within the model's positions. -> the config."""

    gc = stage(what, block, build)
    stage(what, block, lambda: validate_config(gc))
    check_positions(what, f"{block}.max_new_tokens", gc.max_new_tokens, model_cfg)
    return gc


def check_tasks(what: str, tasks) -> None:
    for t in tasks:
        config_lib.check_choice(what, "data.tasks", t, tuple(TASKS))


def check_positions(what: str, key: str, max_new_tokens: int, model_cfg) -> None:
    """max_new_tokens leaves room for a prompt within the model's max_position_embeddings."""
    check_budget(model_cfg, max_new_tokens, what=what, key=key)
