"""Every setting is checked before anything heavy runs (GRPO, SFT, eval, the toy pipelines): unknown
keys at any depth fail naming the dotted key and the closest valid one (in Python and through
`--set`), loss options against the loss's signature, reward names against the registry, enumerated
settings against their values, the tokenizer against the model's embedding table, token ids and
prompt lengths against the model, each before a model loads or a rollout starts."""

import glob
import json
import os
import textwrap

import jax
import numpy as np
import pytest

from r1jax import config as config_lib
from r1jax.model import Transformer, init_params
from r1jax.rl import grpo
from r1jax.rl.config import grpo_config, validate_config
from r1jax.sft.trainer import sft_config, validate_sft_config
from r1jax.toy.tokenizer import save_tokenizer, toy_tokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..")
RECORDS = [{"problem": f"what is {a} + {b}", "answer": str(a + b)} for a in range(1, 5) for b in range(1, 5)]


@pytest.fixture
def no_rollout(monkeypatch):
    """The generation engine, replaced (where the trainer calls it) by one that fails the test if anything
    samples."""
    from r1jax.rl import trainer

    calls = []

    def generate(*a, **k):
        calls.append(1)
        raise AssertionError("the generation engine was called")

    monkeypatch.setattr(trainer, "generate", generate)
    return calls


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading weights (or a random init) for training fails the test."""
    from r1jax import launch

    def load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(launch, "load_for_training", load)


# ------------------------------------------------------------------------------ unknown keys


def _all_configs():
    from r1jax import train
    from r1jax.parallel.mesh import mesh_config

    return [("model config", lambda **kw: config_lib.make_config(**kw), "num_hidden_layers", "n_hidden_layers"),
            ("model config", lambda **kw: config_lib.make_config(rope_scaling=kw), "factor", "fctor"),
            ("mesh config", mesh_config, "fsdp", "fsdpp"),
            ("optimizer config", train.optimizer_config, "warmup_steps", "warmup_step"),
            ("grpo config", grpo_config, "group_size", "groupsize"),
            ("sft config", sft_config, "seq_len", "seq_lenn")]


@pytest.mark.parametrize("what,make,key,typo", _all_configs())
def test_every_config_changes_through_one_override_walk(what, make, key, typo):
    """Model, rope, mesh, optimizer, GRPO and SFT configs: an unknown key names the closest valid one,
    a value of the wrong type names the key, the same way (r1jax.config.override)."""
    with pytest.raises(KeyError, match=rf"{what}: unknown key '(rope_scaling\.)?{typo}'; did you mean "
                                       rf"'(rope_scaling\.)?{key}'"):
        make(**{typo: 1})
    if what != "mesh config":  # mesh sizes are parsed as ints first ("data=2" strings)
        with pytest.raises(ValueError, match=rf"{what}: (rope_scaling\.)?{key}='x' has the wrong type"):
            make(**{key: "x"})


def test_model_configs_are_frozen_and_changed_by_replace():
    cfg = config_lib.tiny_moe()
    assert hash(cfg) == hash(config_lib.tiny_moe())  # a static jit argument as it is
    with pytest.raises(AttributeError, match="immutable"):
        cfg.dtype = "bfloat16"
    with pytest.raises(TypeError, match=r"frozen.*r1jax\.config\.replace"):  # the override walk says what to do
        config_lib.override(cfg, {"dtype": "bfloat16"}, "model config")
    new = config_lib.replace(cfg, dtype="bfloat16", rope_scaling=dict(rope_type="yarn", factor=4.0,
                                                                       original_max_position_embeddings=64))
    assert (new.dtype, cfg.dtype) == ("bfloat16", "float32")
    assert new.rope_scaling.beta_fast == cfg.rope_scaling.beta_fast == 32.0  # a partial block over the defaults
    with pytest.raises(ValueError, match="num_experts_per_tok"):  # validated again
        config_lib.replace(cfg, num_experts_per_tok=cfg.n_routed_experts + 1)
    again = config_lib.replace(new, rope_scaling={"factor": 8.0})  # a block's other keys stay the config's
    assert (again.rope_scaling.rope_type, again.rope_scaling.factor) == ("yarn", 8.0)
    assert "router_bias_update_rate" not in config_lib.base_config()  # the trainers' key, not the model's


def test_cli_set_inside_an_open_block_changes_only_that_key(tmp_path):
    """--set model.rope_scaling.factor=8.0 on a file whose model block sets a yarn rope_scaling: the
    other rope keys stay the file's (an open block's sub-dicts merge, they are not replaced)."""
    from r1jax.cli import load_config

    f = tmp_path / "exp.py"
    f.write_text(textwrap.dedent("""
        import ml_collections
        def get_config():
            return ml_collections.ConfigDict(dict(model=dict(rope_scaling=dict(
                rope_type="yarn", factor=4.0, original_max_position_embeddings=64))))
    """))
    c = load_config(str(f), ["model.rope_scaling.factor=8.0", "model.hidden_size=64"])
    assert c.model.rope_scaling.to_dict() == {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64}
    assert c.model.hidden_size == 64



def test_nested_typos_fail_naming_the_dotted_key_and_the_closest_one():
    with pytest.raises(KeyError, match=r"unknown key 'optimizer\.lr'; did you mean 'optimizer\.learning_rate'\?"):
        grpo_config(optimizer=dict(lr=1e-6))
    with pytest.raises(KeyError, match=r"'loss_kwargs\.kl_coeff'.*did you mean 'loss_kwargs\.kl_coef'\?"):
        grpo_config(loss_kwargs=dict(kl_coeff=0.04))
    with pytest.raises(KeyError, match=r"unknown key 'adv_scal'; did you mean 'adv_scale'\?"):
        grpo_config(adv_scal="group")
    with pytest.raises(KeyError, match=r"'optimizer\.warmup'; did you mean 'optimizer\.warmup_steps'"):
        sft_config(optimizer=dict(warmup=10))
    # the override walk itself (what grpo_config / sft_config / the toy configs use)
    c = grpo_config()
    with pytest.raises(KeyError, match=r"'optimizer\.lr'"):
        config_lib.override(c, {"optimizer": {"lr": 1e-6}}, "grpo config")
    # the same errors are ValueErrors too (every other config error is one)
    with pytest.raises(ValueError, match="optimizer.lr"):
        grpo_config(optimizer=dict(lr=1e-6))
    # set as attributes (an experiment file editing the ConfigDict): validate_config finds them
    c = grpo_config()
    c.optimizer.lr = 1e-6
    with pytest.raises(KeyError, match=r"'optimizer\.lr'; did you mean 'optimizer\.learning_rate'"):
        validate_config(c)
    c = grpo_config()
    c.optimizer = dict(learning_rate=1e-6)  # replaces the whole block: its other keys are gone
    with pytest.raises(KeyError, match=r"optimizer has no 'optimizer\.b1'"):
        validate_config(c)
    # SFT's `model` takes model config keys
    with pytest.raises(KeyError, match=r"'model\.hiden_size'; did you mean 'model\.hidden_size'"):
        validate_sft_config(sft_config(model=dict(hiden_size=32)))
    # and the valid spellings still work
    c = grpo_config(optimizer=dict(learning_rate=1e-6), loss_kwargs=dict(kl_coef=0.04))
    assert c.optimizer.learning_rate == 1e-6 and c.loss_kwargs.kl_coef == 0.04 and c.loss_kwargs.clip_eps == 0.2
    validate_config(c)


def test_cli_set_typos_fail_before_anything_runs(tmp_path):
    from r1jax.cli import config_schema, load_config, main

    with pytest.raises(SystemExit, match=r"'optimizer\.lr'; did you mean 'optimizer\.learning_rate'"):
        load_config(os.path.join(ROOT, "experiments", "grpo_gsm8k.py"), ["optimizer.lr=1e-6"],
                    schema=config_schema("grpo"))
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"'loss_kwargs\.kl_coeff'.*did you mean 'loss_kwargs\.kl_coef'"):
        main(["grpo", "--config", os.path.join(ROOT, "experiments", "grpo_gsm8k.py"), "--set",
              "loss_kwargs.kl_coeff=0.04", "--set", f"run_dir={run}"])
    # a toy pipeline: its blocks are checked against the stage configs they build, before the data,
    # the pretraining or any rollout (the run folder is never made)
    toy = os.path.join(ROOT, "experiments", "r1_zero_toy.py")
    for sets, msg in ((["grpo.optimizer.lr=1e-6"], r"'grpo\.optimizer\.lr'; did you mean 'grpo\.optimizer\.learning_rate'"),
                      (["grpo.adv_scale=grp"], r"adv_scale='grp' is not one of 'group' \| 'batch' \| 'none'"),
                      (["grpo.loss_kwargs.kl_coeff=0.04"], r"'loss_kwargs\.kl_coeff'.*'loss_kwargs\.kl_coef'"),
                      (["grpo.rewards.acuracy=1.0"], r"unknown reward 'rewards\.acuracy'.*'rewards\.accuracy'"),
                      (["model.hiden_size=32"], r"'model\.hiden_size'; did you mean 'model\.hidden_size'"),
                      (["pretrain.optimizer.schedule=cos"], r"pretrain.*schedule='cos' is not one of")):
        with pytest.raises(SystemExit, match=msg):
            main(["r1-zero", "--config", toy, "--run-dir", str(run), *[x for s in sets for x in ("--set", s)]])
    assert not run.exists()
    # keys a partial block leaves out but its stage takes can be set
    c = load_config(toy, ["grpo.mask_truncated=True"], schema=config_schema("r1-zero"))
    assert c.grpo.mask_truncated is True


# ------------------------------------------------------------------------------ the loss's options


def test_loss_kwargs_are_checked_against_the_loss(tmp_path):
    from r1jax.rl.policy import TRAINER_LOSS_ARGS

    # every default option of grpo_config and what the trainer passes are grpo_loss's parameters
    opts = grpo.loss_options(grpo.grpo_loss)
    assert set(grpo_config().loss_kwargs.keys()) | set(TRAINER_LOSS_ARGS) <= set(opts)
    logp = np.zeros((2, 3), np.float32)
    grpo.grpo_loss(logp, logp, None, np.zeros(2, np.float32), np.ones((2, 3), np.float32),
                   **grpo_config().loss_kwargs.to_dict())
    with pytest.raises(TypeError, match="kl_coeff"):  # no catch-all any more
        grpo.grpo_loss(logp, logp, None, np.zeros(2, np.float32), np.ones((2, 3), np.float32), kl_coeff=0.1)
    # a loss file without the option: the config fails naming the key and the closest option
    f = tmp_path / "my_loss.py"
    f.write_text(textwrap.dedent("""
        import jax.numpy as jnp
        from r1jax.rl import samples
        def strict(logp, old_logp, ref_logp, advantages, mask, *, beta=0.0, entropy=None, sample_index=None):
            a = samples.per_token(advantages, samples.sample_ids(sample_index, *logp.shape))
            loss = -jnp.sum(logp * a * mask) / jnp.sum(mask) + beta
            return loss, {"loss": loss}
        def no_entropy(logp, old_logp, ref_logp, advantages, mask, *, beta=0.0, sample_index=None):
            return jnp.sum(logp), {}
        def unpacked(logp, old_logp, ref_logp, advantages, mask, *, entropy=None):
            return jnp.sum(logp), {}
        def loose(logp, old_logp, ref_logp, advantages, mask, **kwargs):
            return jnp.sum(logp), {}
    """))
    c = grpo_config(loss=f"{f}:strict", loss_kwargs=dict(beta=0.1))
    assert c.loss_kwargs.to_dict() == {"beta": 0.1}  # grpo_loss's defaults are not this loss's options
    validate_config(c)
    with pytest.raises(KeyError, match=r"'loss_kwargs\.betta'.*loss '.*my_loss\.py:strict'.*did you mean "
                                       r"'loss_kwargs\.beta'"):
        grpo_config(loss=f"{f}:strict", loss_kwargs=dict(betta=0.1))
    with pytest.raises(ValueError, match="does not take entropy="):
        grpo_config(loss=f"{f}:no_entropy")
    # packed updates pass sample_index: a loss written for padded rows says so, and runs with pack=False
    with pytest.raises(ValueError, match="does not take sample_index="):
        validate_config(grpo_config(loss=f"{f}:unpacked"))
    validate_config(grpo_config(loss=f"{f}:unpacked", pack=False))
    # **kwargs takes anything (and keeps the defaults it may pass on to grpo_loss)
    c = grpo_config(loss=f"{f}:loose", loss_kwargs=dict(anything=1))
    assert c.loss_kwargs.anything == 1 and c.loss_kwargs.clip_eps_high == 0.28
    validate_config(c)
    # the option set as an attribute after the config was built: validate_config finds it
    c = grpo_config()
    c.loss_kwargs.kl_coeff = 0.04
    with pytest.raises(KeyError, match=r"kl_coeff.*kl_coef"):
        validate_config(c)
    with pytest.raises(ValueError, match="passed to the loss by the trainer"):
        grpo_config(loss_kwargs=dict(entropy=None))


# ------------------------------------------------------------------------------ before any rollout


@pytest.mark.parametrize("kw, msg", [
    (dict(adv_scale="grp"), r"adv_scale='grp' is not one of 'group' \| 'batch' \| 'none'"),
    (dict(loss_kwargs=dict(loss_agg="sum")), r"loss_kwargs\.loss_agg must be one of .*token-mean.*got 'sum'"),
    (dict(loss_kwargs=dict(kl_estimator="k4")), r"loss_kwargs\.kl_estimator must be one of .*got 'k4'"),
    (dict(format_template="r1zero"), r"format_template='r1zero' is not one of 'r1_zero' \| 'r1'"),
    (dict(rewards={"acuracy": 1.0}), r"unknown reward 'rewards\.acuracy'.*did you mean 'rewards\.accuracy'"),
    (dict(rewards={"no_such_module_xyz:f": 1.0}), r"cannot load reward 'no_such_module_xyz:f'"),
    (dict(prompt_style="r1-zero"), r"prompt_style='r1-zero' is not one of 'chat' \| 'r1_zero'"),
    (dict(answer_format="gsm"), r"answer_format='gsm' is not one of 'raw' \| 'gsm8k'"),
    (dict(rollout_engine="vllm"), r"rollout_engine='vllm' is not one of 'static' \| 'continuous' \| 'auto'"),
    (dict(rollout_placement="host"), r"rollout_placement='host' is not one of"),
    (dict(old_logp="recomputed"), r"old_logp='recomputed' is not one of 'sampler' \| 'recompute'"),
    (dict(remat_policy="dot"), r"remat_policy='dot' is not one of '' \| 'none' \| 'full'"),
    (dict(dtype="bf16"), r"dtype='bf16' is not one of '' \| 'float32' \| 'bfloat16'"),
    (dict(optimizer=dict(schedule="cos")), r"optimizer\.schedule='cos' is not one of 'constant' \| 'cosine'"),
    (dict(mesh="data=2,fsdpp=2"), r"mesh='data=2,fsdpp=2'.*unknown key 'fsdpp'; did you mean 'fsdp'"),
    (dict(rewards={"preference": 1.0}), r"rewards\.preference needs preference_model"),
])
def test_bad_settings_fail_in_validation_before_the_model_or_a_rollout(kw, msg, tmp_path, no_rollout, no_model_load):
    from r1jax.rl.trainer import run_grpo

    with pytest.raises(ValueError, match=msg):  # at grpo_config (the loss's options) or in run_grpo's validation
        run_grpo(grpo_config(run_dir=str(tmp_path / "run"), init=str(tmp_path / "no_model"), **kw),
                 train_records=RECORDS)
    assert not no_rollout and not (tmp_path / "run").exists()


def test_a_valid_config_reaches_the_rollout(tmp_path, no_rollout):
    from r1jax.rl.trainer import run_grpo

    tok = toy_tokenizer()
    cfg = config_lib.tiny_qwen2(vocab_size=tok.vocab_size)
    c = grpo_config(run_dir=str(tmp_path / "run"), group_size=2, prompts_per_step=2, max_new_tokens=4, steps=1,
                    eval_every=0, save_hf=False, progress=False)
    with pytest.raises(AssertionError, match="generation engine was called"):
        run_grpo(c, model=Transformer(cfg), params=init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tok,
                 train_records=RECORDS)
    assert no_rollout == [1]


# ------------------------------------------------------------------------------ tokenizer vs model


def _folders(tmp_path, model_vocab):
    """A toy tokenizer folder (90 ids) and a tiny Qwen2 checkpoint folder of `model_vocab` rows."""
    from r1jax.checkpoint.hf import save_pretrained

    tok = toy_tokenizer()
    tok_dir = tmp_path / "tokenizer"
    save_tokenizer(tok, tok_dir)
    cfg = config_lib.tiny_qwen2(vocab_size=model_vocab)
    model_dir = tmp_path / "model"
    save_pretrained(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(model_dir))
    return tok, tok_dir, model_dir


def test_tokenizer_larger_than_the_model_fails_naming_both_folders(tmp_path, no_rollout, no_model_load):
    from r1jax.cli import main
    from r1jax.data.tokenizer import check_fits_model
    from r1jax.rl.trainer import run_grpo
    from r1jax.sft.trainer import run_sft

    tok, tok_dir, model_dir = _folders(tmp_path, model_vocab=64)
    n = tok.vocab_size
    assert n == 90
    both = rf"tokenizer '{tok_dir}' has {n} tokens.*model '{model_dir}' has vocab_size=64"
    with pytest.raises(ValueError, match=both):
        run_grpo(grpo_config(run_dir=str(tmp_path / "grpo"), init=str(model_dir), tokenizer=str(tok_dir)),
                 train_records=RECORDS)
    recs = [{"prompt": r["problem"], "completion": r["answer"]} for r in RECORDS]
    with pytest.raises(ValueError, match=both):
        run_sft(sft_config(run_dir=str(tmp_path / "sft"), init=str(model_dir), tokenizer=str(tok_dir)), recs)
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    with pytest.raises(ValueError, match=both):
        main(["eval", "--checkpoint", str(model_dir), "--tokenizer", str(tok_dir), "--data", str(data)])
    from r1jax.eval.runner import evaluate

    cfg = config_lib.tiny_qwen2(vocab_size=64)
    with pytest.raises(ValueError, match=r"evaluate: the tokenizer .* has 90 tokens .*vocab_size=64"):
        evaluate(Transformer(cfg), None, tok, RECORDS[:2], k=1, max_new_tokens=4)
    assert not no_rollout
    # a padded embedding (more rows than the tokenizer has ids, as most released checkpoints) is fine
    check_fits_model(tok, 128)
    with pytest.raises(ValueError, match="vocab_size=89"):
        check_fits_model(tok, 89)


def test_ids_beyond_the_embedding_table_fail_clearly_not_as_nan():
    import r1jax
    from r1jax.sft.trainer import check_ids

    cfg = config_lib.tiny_qwen2()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = [1, 2, cfg.vocab_size + 5, 3]
    # what it would be: the whole row's logits non-finite
    assert not np.isfinite(np.asarray(model.apply({"params": params}, np.asarray([ids])))).all()
    with pytest.raises(ValueError, match=rf"prompt 1 has token id 102 at position 2.*vocab_size=97"):
        r1jax.generate(model, params, [[1, 2, 3], ids], max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="token id -1"):
        r1jax.generate(model, params, [[1, -1]], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"token id 200 .*vocab_size=97"):
        check_ids(np.asarray([[1, 200], [3, 4]]), 97, "sft: rows")


def test_prompt_plus_new_tokens_beyond_max_position_embeddings_fails(tmp_path, no_rollout):
    from r1jax.eval.runner import evaluate
    from r1jax.rl.trainer import run_grpo

    tok = toy_tokenizer()
    cfg = config_lib.tiny_qwen2(vocab_size=tok.vocab_size, max_position_embeddings=40)
    model, params = Transformer(cfg), init_params(cfg, jax.random.PRNGKey(0))
    kw = dict(group_size=2, prompts_per_step=2, eval_every=0, save_hf=False, progress=False)
    with pytest.raises(ValueError, match=r"max_new_tokens=40 leaves no room.*max_position_embeddings=40"):
        run_grpo(grpo_config(run_dir=str(tmp_path / "a"), max_new_tokens=40, **kw), model=model, params=params,
                 tokenizer=tok, train_records=RECORDS)
    # the step's prompts are checked before they are sampled
    with pytest.raises(ValueError, match=r"grpo step 1: train_data: the longest prompt \(\d+ tokens\) \+ "
                                         r"max_new_tokens=32 = \d+ positions exceed the model's "
                                         r"max_position_embeddings=40"):
        run_grpo(grpo_config(run_dir=str(tmp_path / "b"), max_new_tokens=32, **kw), model=model, params=params,
                 tokenizer=tok, train_records=RECORDS)
    with pytest.raises(ValueError, match=r"evaluate: the longest prompt .* max_position_embeddings=40"):
        evaluate(model, params, tok, RECORDS[:2], k=1, max_new_tokens=32)
    with pytest.raises(ValueError, match=r"evaluate: template='r1-zero' is not one of"):
        evaluate(model, params, tok, RECORDS[:2], k=1, max_new_tokens=4, template="r1-zero")
    assert not no_rollout


# ------------------------------------------------------------------------------ experiments


EXPERIMENT_STAGES = {"grpo_gsm8k.py": "grpo", "sft_cold_start.py": "sft", "r1_zero_toy.py": "r1-zero",
                     "r1_toy.py": "r1", "distill_toy.py": "distill", "rejection_sample_toy.py": "rejection-sample",
                     "train_rm_toy.py": "train-rm"}


def test_every_experiment_config_validates():
    from r1jax.cli import config_schema, load_config, validate_stage_config

    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "experiments", "*.py")))
    assert set(files) == set(EXPERIMENT_STAGES), "a new experiment: name its stage in EXPERIMENT_STAGES"
    for f in files:
        cmd = EXPERIMENT_STAGES[f]
        cfg = load_config(os.path.join(ROOT, "experiments", f), schema=config_schema(cmd))
        validate_stage_config(cmd, cfg)
