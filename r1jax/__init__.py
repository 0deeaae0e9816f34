"""r1jax: DeepSeek-R1 in JAX.

Public entry points (see README):
    model, params = r1jax.from_pretrained(path, dtype=jnp.bfloat16)
    r1jax.generate(model, params, prompts, max_new_tokens=..., ...)
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy, so `import r1jax.rl.grpo` does not pull in the model stack
    if name in ("from_pretrained", "save_pretrained"):
        from r1jax.checkpoint import hf

        return getattr(hf, name)
    if name == "generate":
        from r1jax.generate.engine import generate

        return generate
    raise AttributeError(f"module 'r1jax' has no attribute {name!r}")
