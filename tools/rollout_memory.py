"""Memory of the rollout engines' compiled programs at a real shape, read from `memory_analysis()`.

    # Qwen2.5-1.5B, 128 decode rows, a 256-token prompt bucket + 8,192 new tokens, on this CPU
    python3 tools/rollout_memory.py --config qwen2_5_1_5b --rows 128 --prompt 256 --new-tokens 8192
    # the same rows split over the 4 chips of one v5p host (libtpu's compiler, no TPU needed)
    python3 tools/rollout_memory.py --config qwen2_5_1_5b --rows 128 --prompt 256 --new-tokens 8192 \
        --topology v5p:2x2x1

Nothing is allocated: the weights (compute dtype), the cache and the decode state are
ShapeDtypeStructs and each program is `jit(...).lower(...).compile()`d as the engines build it
(r1jax.generation.engine / continuous, stacked layers as on an accelerator). Printed per program:
the cache (positions x rows), arguments, outputs, temporaries and the total the compiler reserves
(arguments + outputs + temporaries - aliased, per device). Programs:

  - prefill / decode: the static engine (one prefill of `--prompts` prompts repeated to `--rows`
    rows, then the decode loop);
  - refill / segment: the continuous engine (`--rows` slots; a refill starts `--refill-rows` requests
    of `--refill-prompts` distinct prompts; a segment decodes every busy row).

With `--topology`, the rows (cache and decode state) are split over the chips on a data mesh and the
weights replicated: `rollout_placement="local"` on one host. The cache length is the engines' own
(`r1jax.generation.programs.cache_length` where it exists, else the power-of-two bucket of earlier
versions), so the same command measures an older checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MIB = 2 ** 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="qwen2_5_1_5b", help="model preset (r1jax.config.PRESETS)")
    p.add_argument("--layers", type=int, default=0, help="override num_hidden_layers")
    p.add_argument("--rows", type=int, default=128, help="decode rows (static: the batch; continuous: slots)")
    p.add_argument("--prompts", type=int, default=8, help="static engine: distinct prompts (rows / prompts samples each)")
    p.add_argument("--prompt", type=int, default=256, help="prompt bucket (tokens)")
    p.add_argument("--new-tokens", type=int, default=8192)
    p.add_argument("--refill-rows", type=int, default=16, help="continuous: requests a refill starts")
    p.add_argument("--refill-prompts", type=int, default=1, help="continuous: distinct prompts among them")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype of the weights and the cache")
    p.add_argument("--topology", default="", help="TPU topology (e.g. v5p:2x2x1): rows split over its chips")
    p.add_argument("--programs", default="prefill,decode,refill,segment")
    p.add_argument("--unstacked", type=int, default=None, choices=(0, 1),
                   help="per-layer params and cache, as the engines run on CPU (default: the backend's choice, "
                        "r1jax.backends.unstack_for_decode; stacked with --topology)")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def cache_len(prompt: int, steps: int) -> int:
    from r1jax.generation import programs

    if hasattr(programs, "cache_length"):
        return programs.cache_length(prompt, steps)
    return programs.bucket(prompt + steps, 16)  # earlier versions: a power of two


def refill_prefill_rows(k: int, u: int) -> int:
    """Rows of the refill's prefill for k requests of u distinct prompts, as the engine builds them."""
    from r1jax.generation import continuous, programs

    if hasattr(continuous, "refill_rows"):
        return continuous.refill_rows(k, u)
    return programs.bucket(k, 1)  # earlier versions: padded to the refill's own rows


def analyse(compiled) -> dict:
    m = compiled.memory_analysis()
    arg, out, tmp, alias = (m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes,
                            m.alias_size_in_bytes)
    return {"argument_mib": arg / MIB, "output_mib": out / MIB, "temp_mib": tmp / MIB, "alias_mib": alias / MIB,
            "total_mib": (arg + out + tmp - alias) / MIB}


def run(args) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from r1jax import config as config_lib, parallel
    from r1jax.generation import continuous, engine
    from r1jax.model import Transformer, init_params
    from r1jax.model.transformer import init_cache, unstack_layers

    over = {"dtype": args.dtype}
    if args.layers:
        over["num_hidden_layers"] = args.layers
    cfg = config_lib.replace(config_lib.get_preset(args.config), **over)
    model = Transformer(cfg)
    dt = jnp.dtype(args.dtype)
    mesh = None
    if args.topology:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from aot_compile import get_topology

        devices = get_topology(args.topology).devices
        mesh = parallel.make_mesh({"data": len(devices)}, devices=devices)
    n_dev = len(mesh.devices.flat) if mesh is not None else 1

    def sds(shape, dtype, batch_axis=None):
        if mesh is None:
            return jax.ShapeDtypeStruct(shape, dtype)
        spec = [None] * len(shape)
        if batch_axis is not None and shape[batch_axis] % n_dev == 0:
            spec[batch_axis] = "data"
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P(*spec)))

    unstacked = args.unstacked
    if unstacked is None:
        from r1jax import backends

        unstacked = 0 if args.topology else int(backends.unstack_for_decode())
    pshape = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    if unstacked:  # what r1jax.generation.programs.prepare_model hands the engines on CPU
        model = model.clone(unstacked=True)
        pshape = jax.eval_shape(lambda p: unstack_layers(p, cfg), pshape)
    params = jax.tree.map(lambda a: sds(a.shape, dt if a.ndim >= 2 else a.dtype), pshape)
    bax = 0 if unstacked else 1  # the cache's batch axis
    steps = args.new_tokens
    L = cache_len(args.prompt, steps)
    R = args.rows
    cache_avals = jax.tree.map(lambda a: sds(a.shape, a.dtype, batch_axis=bax),
                               jax.eval_shape(lambda: init_cache(cfg, R, L, unstacked=bool(unstacked))))
    cache_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(cache_avals))
    eos = sds((1,), jnp.int32)
    samp = (1.0, 1.0, 0)
    info = {"config": args.config, "layers": cfg.num_hidden_layers, "rows": R, "prompt": args.prompt,
            "new_tokens": steps, "cache_len": L, "cache_mib": cache_bytes / MIB, "devices": n_dev,
            "topology": args.topology or "cpu", "unstacked": bool(unstacked), "programs": {}}
    print(f"{args.config}: {R} rows, prompt {args.prompt} + {steps} new -> cache of {L} positions: "
          f"{cache_bytes / MIB:,.0f} MiB ({cache_bytes / MIB / n_dev:,.0f} MiB per device over {n_dev})", flush=True)
    want = set(args.programs.split(","))
    ctx = parallel.use_mesh(mesh) if mesh is not None else contextlib.nullcontext()

    def report(name, lowered):
        t0 = time.time()
        fig = analyse(lowered.compile())
        fig["compile_s"] = time.time() - t0
        info["programs"][name] = fig
        print(f"  {name:8s} arguments {fig['argument_mib']:10,.0f}  outputs {fig['output_mib']:10,.0f}  "
              f"temporaries {fig['temp_mib']:10,.0f}  aliased {fig['alias_mib']:10,.0f}  total "
              f"{fig['total_mib']:10,.0f} MiB per device  ({fig['compile_s']:.0f} s)", flush=True)

    with ctx:
        if want & {"prefill", "decode"}:
            pre, dec = engine._jitted(model, L, steps, *samp, (), None)
            b = args.prompts
            if "prefill" in want:
                report("prefill", pre.lower(params, sds((b, args.prompt), jnp.int32), sds((b,), jnp.int32),
                                            sds((R, 2), jnp.uint32, 0), sds((R,), jnp.int32, 0),
                                            sds((R,), jnp.bool_, 0), eos, sds((R,), jnp.int32, 0)))
            if "decode" in want:
                row = lambda d, extra=(): sds((R,) + extra, d, 0)  # noqa: E731
                report("decode", dec.lower(params, cache_avals, row(jnp.int32), row(jnp.float32), row(jnp.bool_),
                                           row(jnp.int32), row(jnp.uint32, (2,)), eos, row(jnp.int32)))
        if want & {"refill", "segment"}:
            refill, segment = continuous._jitted(model, L, *samp, (), False)
            st = jax.tree.map(lambda a: sds(a.shape, a.dtype, 0), jax.eval_shape(lambda: continuous._state(R, steps)))
            if "refill" in want:
                k = args.refill_rows
                u = refill_prefill_rows(k, args.refill_prompts)
                info["refill_prefill_rows"] = u
                report("refill", refill.lower(params, cache_avals, st, sds((u, args.prompt), jnp.int32),
                                              sds((u,), jnp.int32), sds((k,), jnp.int32), sds((k,), jnp.int32),
                                              sds((k, 2), jnp.uint32), sds((k,), jnp.int32), eos))
            if "segment" in want:
                report("segment", segment.lower(params, cache_avals, st, sds((), jnp.int32), eos))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    return info


def main(argv=None):
    info = run(parse_args(argv))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
