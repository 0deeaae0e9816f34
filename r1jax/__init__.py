"""r1jax: DeepSeek-R1 in JAX.

Public entry points (see README):
    model, params = r1jax.from_pretrained(path, dtype=jnp.bfloat16)
    logits = model.apply({"params": params}, input_ids)
    tok = r1jax.load_tokenizer(path)     # the checkpoint's tokenizer, special tokens and chat template
    r1jax.generate(model, params, prompts, max_new_tokens=..., temperature=..., top_p=..., seed=...)

`r1jax.generate` is the function; the rollout engine behind it lives in the subpackage
`r1jax.generation` (engine, continuous, programs, sampling).
"""

__version__ = "0.1.0"

from r1jax.checkpoint.hf import from_pretrained, save_pretrained  # noqa: E402
from r1jax.data.tokenizer import load_tokenizer  # noqa: E402
from r1jax.generation.engine import generate  # noqa: E402

__all__ = ["from_pretrained", "generate", "load_tokenizer", "save_pretrained"]
