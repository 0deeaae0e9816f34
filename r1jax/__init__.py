"""r1jax: DeepSeek-R1 in JAX.

Public entry points (see README):
    model, params = r1jax.from_pretrained(path, dtype=jnp.bfloat16)
    logits = model.apply({"params": params}, input_ids)
    tok = r1jax.load_tokenizer(path)     # the checkpoint's tokenizer, special tokens and chat template
    r1jax.generate(model, params, prompts, max_new_tokens=..., temperature=..., top_p=..., seed=...)
"""

__version__ = "0.1.0"

# `generate` is bound to the function (the subpackage r1jax.generate stays importable by path).
from r1jax.generate.engine import generate  # noqa: E402,F401


def __getattr__(name):  # lazy: checkpoint I/O is only imported when used
    if name in ("from_pretrained", "save_pretrained"):
        from r1jax.checkpoint import hf

        return getattr(hf, name)
    if name == "load_tokenizer":
        from r1jax.data.tokenizer import load_tokenizer

        return load_tokenizer
    raise AttributeError(f"module 'r1jax' has no attribute {name!r}")
