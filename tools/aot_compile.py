"""Compile the full train step for a TPU topology without TPU hardware (like MaxText's train_compile).

libtpu (`pip install 'jax[tpu]'`) provides the TPU compiler; `jax.experimental.topologies.
get_topology_desc(platform="tpu", topology_name="v5p:8x8x8")` describes the chips, a mesh is built
over them, the sharded train state and batch are given as ShapeDtypeStructs (nothing is
allocated) and `jit(train_step).lower(...).compile()` runs the whole XLA:TPU pipeline (SPMD
partitioning, fusion, scheduling, buffer assignment). `compiled.memory_analysis()` is the
per-chip HBM the step needs.

    python3 tools/aot_compile.py --config deepseek_v3_671b --topology v5p:8x8x8
    python3 tools/aot_compile.py --config deepseek_v3_671b --topology v5p:8x8x8 --mesh fsdp=8,expert=64
    python3 tools/aot_compile.py --config small_moe --topology v5p:2x2x1 --seq 512   # seconds
    # the GRPO policy step of a dense model on ONE v5p chip (fp32 master weights, bf16 compute)
    python3 tools/aot_compile.py --config qwen2_5_1_5b --topology v5p:1x1x1 --step grpo \
        --param-dtype float32 --batch 64 --seq 2048 --remat full --logprob-chunk 256

The step is r1jax.train.train_step with r1jax.train.lm_loss (next-token CE + MTP + router-bias
update), AdamW with fp32 moments (bf16 params by default; --param-dtype float32 for fp32 master weights
with bf16 compute, as the GRPO trainer keeps them), the state donated, in/out shardings from
r1jax.parallel's rules, MoE experts under shard_map expert parallelism (moe_impl="ep"; irrelevant
for dense models). `--step grpo` is the GRPO policy step of r1jax.rl.trainer (make_policy_loss:
the token log-probs with the LM head `--logprob-chunk` positions at a time, 0 = the full
[rows, seq, vocab] logits). A topology smaller than one host (v5p:1x1x1, v6e:1x1: one chip) is
described with chips_per_host_bounds = its own shape.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host runs on CPU; the TPU compiler comes from libtpu
# libtpu takes /tmp/libtpu_lockfile per process; compiling needs no chip, so let several processes load it
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

GIB = 1024 ** 3
HBM_GIB = {"v5p": 95.0, "v5e": 16.0, "v5litepod": 16.0, "v4": 32.0, "v6e": 32.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="deepseek_v3_671b", help="model preset (r1jax.config.PRESETS)")
    p.add_argument("--topology", default="v5p:8x8x8", help="TPU topology name, e.g. v5p:8x8x8 (512 chips)")
    p.add_argument("--mesh", default=None,
                   help="mesh sizes 'data=1,fsdp=8,expert=64,tensor=1' (-1 = rest); default: expert=min(E, chips), "
                        "fsdp=rest")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--per-device-batch", type=int, default=1, help="sequences per batch shard")
    p.add_argument("--batch", type=int, default=0, help="global batch (sequences); default per-device-batch x shards")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--layers", type=int, default=0, help="override num_hidden_layers (smaller variants)")
    p.add_argument("--experts", type=int, default=0, help="override n_routed_experts (smaller variants)")
    p.add_argument("--vocab", type=int, default=0, help="override vocab_size (e.g. a vocab-heavy tiny variant)")
    p.add_argument("--param-dtype", default="bfloat16",
                   help="storage dtype of the params ('' = the preset's; float32 = fp32 master weights)")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype ('' = the preset's)")
    p.add_argument("--moment-dtype", default="float32")
    p.add_argument("--remat", default="full", choices=("none", "full", "dots", "dots_no_batch"))
    p.add_argument("--capacity-factor", type=float, default=None, help="default: the config's")
    p.add_argument("--moe-impl", default="ep")
    p.add_argument("--no-mtp", action="store_true", help="train without the MTP loss")
    p.add_argument("--new-tokens", type=int, default=1024,
                   help="--step decode: decode steps of the loop (the cache holds --seq positions)")
    p.add_argument("--step", default="lm", choices=("lm", "grpo", "decode"),
                   help="lm: next-token CE (+MTP); grpo: the GRPO policy step of r1jax.rl.trainer (clipped "
                        "surrogate + k3 KL to a reference, old/ref log-probs and advantages in the batch)")
    p.add_argument("--logprob-chunk", type=int, default=None,
                   help="positions per block of the LM head when computing token log-probs / CE "
                        "(r1jax.model.logprobs); 0 = the full [rows, seq, vocab] logits. Default: 256 for "
                        "--step grpo, 0 for --step lm")
    p.add_argument("--attention-impl", default="xla", choices=("xla", "pallas"),
                   help="the model's attention_impl (GRPO/SFT configs default to auto = pallas on TPU)")
    p.add_argument("--packed", action="store_true",
                   help="grpo: the packed update's micro-batch (r1jax.rl.packed: segment ids, positions restarting "
                        "per sample, sample_index, per-sample advantages; two samples per row)")
    p.add_argument("--kl", type=float, default=0.001,
                   help="grpo: kl_coef of the k3 KL to the reference (ref_logp is in the batch only when > 0)")
    p.add_argument("--chips-per-host-bounds", default="",
                   help="e.g. '1,1,1'; default: the topology's own shape when it is smaller than a host "
                        "(2x2x1), else libtpu's default")
    p.add_argument("--allow-oom", action="store_true",
                   help="compile a step that does not fit the chip's HBM anyway (libtpu's xla_tpu_no_crash_on_oom), "
                        "to get its memory_analysis(); without it XLA:TPU refuses it and the sizes come from the "
                        "error message")
    p.add_argument("--verbose-oom", action="store_true",
                   help="print XLA's whole out-of-memory error (for a breakdown by buffer, compile with "
                        "XLA_FLAGS=--xla_dump_to=DIR and read DIR/*memory-usage-report.txt)")
    p.add_argument("--compiler-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an XLA compiler option for lowered.compile(compiler_options=...) (repeatable)")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--dump-hlo", default=None, help="write the optimized HLO text here")
    return p.parse_args(argv)


def default_mesh(cfg, n: int) -> dict:
    e = cfg.n_routed_experts or 1
    expert = 1
    while expert * 2 <= n and e % (expert * 2) == 0 and expert * 2 <= 64 and n % (expert * 2) == 0:
        expert *= 2
    return dict(data=1, fsdp=-1, expert=expert, tensor=1)


def get_topology(name: str, bounds: str = ""):
    """The TPU topology description for `name` ("v5p:8x8x8", "v5p:1x1x1", "v6e:1x1").

    libtpu's default host is 2x2x1 chips; a topology smaller than that (a single chip) needs
    chips_per_host_bounds = its own shape, which is passed here when `bounds` is empty."""
    from jax.experimental import topologies

    kw = {}
    if bounds:
        kw["chips_per_host_bounds"] = tuple(int(x) for x in bounds.replace("x", ",").split(","))
    else:
        dims = [int(x) for x in name.split(":", 1)[1].split("x")] if ":" in name else []
        dims = (dims + [1, 1, 1])[:3]
        if dims and (dims[0] < 2 or dims[1] < 2):
            kw["chips_per_host_bounds"] = tuple(dims)
    return topologies.get_topology_desc(platform="tpu", topology_name=name, **kw)


def logprob_chunk(args) -> int:
    if args.logprob_chunk is not None:
        return args.logprob_chunk
    return 256 if args.step == "grpo" else 0


def build(args):
    """(mesh, cfg, step, state avals, batch avals, info) for the arguments."""
    import functools

    import jax
    import jax.numpy as jnp

    from r1jax import config as config_lib, parallel, train
    from r1jax.model import Transformer

    topo = get_topology(args.topology, args.chips_per_host_bounds)
    devices = list(topo.devices)
    over = dict(remat_policy=args.remat, moe_impl=args.moe_impl, attention_impl=args.attention_impl)
    if args.param_dtype:
        over["param_dtype"] = args.param_dtype
    if args.dtype:
        over["dtype"] = args.dtype
    base = config_lib.get_preset(args.config)
    if args.layers:
        over["num_hidden_layers"] = args.layers
        over["first_k_dense_replace"] = min(base.first_k_dense_replace, args.layers)
    if args.experts:
        over["n_routed_experts"] = args.experts
    if args.vocab:
        over["vocab_size"] = args.vocab
    if args.capacity_factor is not None:
        over["capacity_factor"] = args.capacity_factor
    d = base.to_dict()
    d.update(over)
    if d["n_routed_experts"] and d["n_group"] > 1 and d["n_routed_experts"] // d["n_group"] < 2:
        d["n_group"] = d["topk_group"] = 1
    cfg = config_lib.make_config(**d)
    mesh_spec = args.mesh or default_mesh(cfg, len(devices))
    mesh = parallel.make_mesh(mesh_spec, devices=devices)
    shards = parallel.batch_axis_size(mesh)
    batch = args.batch or args.per_device_batch * shards * args.grad_accum
    tx = train.make_optimizer(train.optimizer_config(moment_dtype=args.moment_dtype))
    model = Transformer(cfg)
    if args.step == "decode":
        return build_decode(args, cfg, model, mesh, len(devices), devices[0].device_kind, tx)
    state_avals, st_sh = parallel.abstract_state(cfg, tx, mesh)
    chunk = logprob_chunk(args)
    if args.step == "grpo":
        from r1jax.rl import grpo
        from r1jax.rl.policy import make_policy_loss

        loss_fn = make_policy_loss(grpo.get_loss_fn("grpo"), 1.0,
                                   dict(clip_eps=0.2, clip_eps_high=0.28, kl_coef=args.kl, loss_agg="token-mean"),
                                   chunk=chunk)
    else:
        kw = dict(chunk=chunk)
        if args.no_mtp:
            kw["mtp_weight"] = 0.0
        loss_fn = functools.partial(train.lm_loss, **kw)
    step = parallel.make_sharded_train_step(model, loss_fn, tx, mesh, st_sh, grad_accum=args.grad_accum,
                                            router_bias_update_rate=1e-3)
    bsh = parallel.batch_sharding(mesh)
    b_avals = {
        "input_ids": jax.ShapeDtypeStruct((batch, args.seq), jnp.int32, sharding=bsh),
        "targets": jax.ShapeDtypeStruct((batch, args.seq), jnp.int32, sharding=bsh),
        "loss_mask": jax.ShapeDtypeStruct((batch, args.seq), jnp.float32, sharding=bsh),
    }
    if args.step == "grpo":  # the batch of r1jax.rl.trainer.build_batch
        b_avals["token_mask"] = jax.ShapeDtypeStruct((batch, args.seq), jnp.int32, sharding=bsh)
        for k in ("old_logp",) + (("ref_logp",) if args.kl > 0 else ()):
            b_avals[k] = jax.ShapeDtypeStruct((batch, args.seq), jnp.float32, sharding=bsh)
        b_avals["advantages"] = jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=bsh)
        if args.packed:  # r1jax.rl.packed's micro-batch: two sample slots per row
            for k in ("positions", "segment_ids", "sample_index"):
                b_avals[k] = jax.ShapeDtypeStruct((batch, args.seq), jnp.int32, sharding=bsh)
            b_avals["advantages"] = jax.ShapeDtypeStruct((2 * batch,), jnp.float32, sharding=bsh)
    counts = config_lib.count_params(cfg)
    info = dict(step=args.step, config=args.config, topology=args.topology, chips=len(devices), device_kind=devices[0].device_kind,
                mesh=dict(mesh.shape), batch=batch, seq=args.seq, tokens_per_step=batch * args.seq,
                grad_accum=args.grad_accum, micro_batch=batch // args.grad_accum,
                params_total=counts["total"] + counts["mtp"], vocab=cfg.vocab_size,
                param_dtype=cfg.param_dtype, dtype=cfg.dtype, moment_dtype=args.moment_dtype, remat=args.remat,
                logprob_chunk=chunk, kl_coef=(args.kl if args.step == "grpo" else None),
                attention_impl=args.attention_impl, packed=bool(args.packed),
                capacity_factor=cfg.capacity_factor, layers=cfg.num_hidden_layers, experts=cfg.n_routed_experts)
    return mesh, cfg, step, state_avals, b_avals, info


def build_decode(args, cfg, model, mesh, chips: int, kind: str, tx):
    """The rollout engine's decode loop (r1jax.generation.engine._decode: a while_loop of one-token
    steps over the latent / KV cache, sampling inside) for `batch` rows, a cache of `--seq`
    positions and `--new-tokens` steps; the weights in the compute dtype with the training
    layout's shardings (the rollout reads the trainer's params with no reshard), the cache split
    over the batch axes. -> build()'s tuple; "state" = (params, cache)."""
    import functools
    import types

    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from r1jax import config as config_lib, parallel
    from r1jax.generation.engine import _decode
    from r1jax.model.transformer import init_cache

    state_avals, _ = parallel.abstract_state(cfg, tx, mesh)
    dt = config_lib.dtype_of(cfg.dtype)

    def compute(a):  # what r1jax.model.precision.compute_copy keeps: weights in the compute dtype
        return jax.ShapeDtypeStruct(a.shape, dt if len(a.shape) >= 2 else a.dtype, sharding=a.sharding)

    params = jax.tree.map(compute, state_avals.params)
    shards = parallel.batch_axis_size(mesh)
    batch = args.batch or args.per_device_batch * shards
    axes = parallel.batch_spec(mesh)[0]
    cache_shape = jax.eval_shape(lambda: init_cache(cfg, batch, args.seq))
    cache = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(
        mesh, P(None, axes) if batch % shards == 0 else P())), cache_shape)
    bsh = parallel.batch_sharding(mesh) if batch % shards == 0 else NamedSharding(mesh, P())
    rep = NamedSharding(mesh, P())
    rows = dict(first_tok=(jnp.int32, ()), first_lp=(jnp.float32, ()), done=(jnp.bool_, ()),
                lengths=(jnp.int32, ()), keys=(jnp.uint32, (2,)), max_new=(jnp.int32, ()))
    rest = {k: jax.ShapeDtypeStruct((batch,) + extra, d, sharding=bsh) for k, (d, extra) in rows.items()}
    rest["eos"] = jax.ShapeDtypeStruct((1,), jnp.int32, sharding=rep)
    fn = jax.jit(functools.partial(_decode, model=model, steps=args.new_tokens, temperature=1.0, top_p=1.0,
                                   top_k=0, routes=None), donate_argnums=(1,))

    def lower(avals, kw):
        with parallel.use_mesh(mesh):
            return fn.lower(avals[0], avals[1], kw["first_tok"], kw["first_lp"], kw["done"], kw["lengths"],
                            kw["keys"], kw["eos"], kw["max_new"])

    counts = config_lib.count_params(cfg)
    info = dict(step="decode", config=args.config, topology=args.topology, chips=chips, device_kind=kind,
                mesh=dict(mesh.shape), batch=batch, seq=args.seq, new_tokens=args.new_tokens,
                tokens_per_step=batch * args.new_tokens, grad_accum=1, micro_batch=batch,
                params_total=counts["total"] + counts["mtp"], vocab=cfg.vocab_size, param_dtype=cfg.dtype,
                dtype=cfg.dtype, moment_dtype=None, remat=None, logprob_chunk=None, kl_coef=None,
                capacity_factor=cfg.capacity_factor, layers=cfg.num_hidden_layers, experts=cfg.n_routed_experts)
    return mesh, cfg, types.SimpleNamespace(lower=lower), (params, cache), rest, info


def state_bytes_per_device(state_avals) -> int:
    import jax

    tot = 0
    for a in jax.tree.leaves(state_avals):
        shard = a.sharding.shard_shape(a.shape)
        n = 1
        for s in shard:
            n *= s
        tot += n * a.dtype.itemsize
    return tot


def compiler_options(args) -> dict:
    opts = {}
    for kv in args.compiler_option:
        k, v = kv.split("=", 1)
        opts[k] = int(v) if v.lstrip("-").isdigit() else {"true": True, "false": False}.get(v.lower(), v)
    if args.allow_oom:
        opts["xla_tpu_no_crash_on_oom"] = True
    return opts


def oom_figures(msg: str) -> dict:
    """The sizes an XLA:TPU 'Ran out of memory on HBM' error states, in GiB: {'peak_gib': 'the total
    memory required for HLO temporaries' (the figure memory_analysis() reports as
    peak_memory_in_bytes when the step is compiled with --allow-oom), 'hbm_avail_gib'}."""
    import re

    units = {"K": 2 ** -20, "M": 2 ** -10, "G": 1.0, "T": 1024.0}
    out = {}
    m = re.search(r"HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)", msg)
    if m:
        out["peak_gib"] = float(m.group(1)) * units[m.group(2)]
        out["hbm_avail_gib"] = float(m.group(3)) * units[m.group(4)]
    return out


def run(args) -> dict:
    t0 = time.time()
    mesh, cfg, step, state_avals, b_avals, info = build(args)
    from r1jax import parallel

    t1 = time.time()
    print(f"mesh: {parallel.describe(mesh)}", flush=True)
    print(f"batch: {info['batch']} x {info['seq']} tokens ({info['tokens_per_step']} / step, grad_accum "
          f"{info['grad_accum']}), params {info['params_total'] / 1e9:.2f}B {info['param_dtype']} (compute "
          f"{info['dtype']}), moments {info['moment_dtype']}, remat {info['remat']}, logprob_chunk "
          f"{info['logprob_chunk']}", flush=True)
    lowered = step.lower(state_avals, b_avals)  # decode: (params, cache) and the loop's other inputs
    t2 = time.time()
    print(f"lowered in {t2 - t1:.1f}s; compiling for {info['device_kind']} ...", flush=True)
    opts = compiler_options(args)
    kind = args.topology.split(":")[0]
    hbm = HBM_GIB.get(kind)
    info.update(compiler_options=opts, state_gib_per_device=state_bytes_per_device(state_avals) / GIB, hbm_gib=hbm)
    try:
        compiled = lowered.compile(compiler_options=opts) if opts else lowered.compile()
    except Exception as e:  # noqa: BLE001 - XLA:TPU refuses a step that does not fit the chip's HBM
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        t3 = time.time()
        msg = str(e).split("\n")[0]
        fig = oom_figures(msg)
        batch_bytes = state_bytes_per_device(b_avals)
        arg = info["state_gib_per_device"] + batch_bytes / GIB
        info.update(fits=False, compile_error=msg, lower_s=t2 - t1, compile_s=t3 - t2, build_s=t1 - t0,
                    argument_gib=arg, peak_gib=fig.get("peak_gib"),
                    total_gib_per_device=(arg + fig["peak_gib"]) if "peak_gib" in fig else None)
        info["total_with_peak_gib"] = info["total_gib_per_device"]
        print(f"compile refused after {t3 - t2:.1f}s: {msg}")
        if args.verbose_oom:
            print(str(e))
        if "peak_gib" in fig:
            print(f"per-device: arguments {arg:.2f} GiB (train state {info['state_gib_per_device']:.2f} GiB, "
                  f"donated), HLO temporaries (peak) {fig['peak_gib']:.2f} GiB (from the error) -> "
                  f"~{info['total_gib_per_device']:.2f} GiB of {hbm} GiB HBM: DOES NOT FIT "
                  f"(--allow-oom compiles it anyway for the full memory_analysis)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(info, f, indent=1)
        return info
    t3 = time.time()
    mem = compiled.memory_analysis()
    gen = getattr(mem, "generated_code_size_in_bytes", 0) or 0
    arg, out, tmp, alias = (mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes,
                            mem.alias_size_in_bytes)
    total = arg + out + tmp - alias  # what XLA reserves in HBM (code is reported apart)
    peak = getattr(mem, "peak_memory_in_bytes", 0) or 0  # the buffer assignment's peak (0: not reported)
    # XLA:TPU checks peak_memory_in_bytes (its OOM message's "HLO temporaries", the memory-usage
    # report's total) against HBM; it can exceed temp_size_in_bytes, so count the larger of the two
    with_peak = arg + out - alias + max(tmp, peak)
    info.update(
        total_with_peak_gib=with_peak / GIB,
        argument_gib=arg / GIB, output_gib=out / GIB, temp_gib=tmp / GIB, alias_gib=alias / GIB,
        generated_code_gib=gen / GIB, total_gib_per_device=total / GIB, peak_gib=peak / GIB,
        fits=(hbm is None or max(total, with_peak) / GIB <= hbm), build_s=t1 - t0, lower_s=t2 - t1, compile_s=t3 - t2,
    )
    print(f"compiled in {t3 - t2:.1f}s (lower {t2 - t1:.1f}s)")
    print(f"per-device memory (compiled.memory_analysis()): arguments {arg / GIB:.2f} GiB (train state "
          f"{info['state_gib_per_device']:.2f} GiB), outputs {out / GIB:.2f} GiB (aliased to donated args "
          f"{alias / GIB:.2f} GiB), temporaries {tmp / GIB:.2f} GiB, code {gen / GIB:.3f} GiB")
    print(f"per-device total {total / GIB:.2f} GiB (arguments + outputs + temporaries - aliased; with "
          f"peak_memory_in_bytes {peak / GIB:.2f} GiB for the temporaries: {with_peak / GIB:.2f} GiB)" + (f" of {hbm:.0f} GiB HBM: {'fits' if info['fits'] else 'DOES NOT FIT'}"
                                                       if hbm else ""))
    if args.dump_hlo:
        with open(args.dump_hlo, "w") as f:
            f.write(compiled.as_text())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    return info


def main(argv=None):
    args = parse_args(argv)
    info = run(args)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
