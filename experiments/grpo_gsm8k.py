"""R1-Zero-style GRPO on your own dense HF checkpoint (Qwen2.5, DeepSeek-R1-Distill-Qwen, Llama 3.x)
with GSM8K as its file carries it (`question`, `answer` ending in "#### 18").

    r1jax grpo --config experiments/grpo_gsm8k.py --set init=/ckpts/Qwen2.5-1.5B-Instruct \
        --set train_data=/data/gsm8k/train.jsonl --set eval_data=/data/gsm8k/test.jsonl \
        --set run_dir=runs/grpo_gsm8k [--set mesh=fsdp=-1] [--set steps=500]

The settings are those of the public reproductions (TRL / open-r1 GRPO on GSM8K, simpleRL-Zoo):
lr 1e-6 constant, G = 8 samples per prompt at T = 1.0, up to 1024 new tokens, no KL (set
`loss_kwargs.kl_coef=0.001` for the DeepSeekMath-style penalty; the frozen reference then exists),
accuracy + format rewards, DAPO's clip-higher (0.2 / 0.28) with the token-mean loss. The prompt is
the checkpoint's own chat template with the R1-Zero instruction as system message; the format
reward asks for <think>...</think><answer>...</answer> (an R1-Distill template's "<think>\\n"
generation prompt is taken into account), the accuracy reward compares the <answer> (or the last
\\boxed{}) with the number after "####".

Memory: fp32 master weights + fp32 Adam (16 B/param with the gradient), bf16 compute, full remat,
the LM head 256 positions at a time (never the [rows, seq, vocab] logits). 128 rollouts per step are
trained as 4 mini-batches of 32 rows (4 optimizer steps per GRPO step, as TRL's
num_iterations=1 with gradient_accumulation); set `grad_accum` to split each mini-batch further.
Every `--set key=value` of r1jax.rl.config.grpo_config works (e.g. `--set prompts_per_step=32`).
metrics.jsonl, TensorBoard and grpo_curves.png are written to run_dir; run_dir/final is an HF folder
(bf16 weights + the tokenizer files and chat template) that transformers and vLLM load as it is.
A killed run resumes from its last checkpoint (every `save_every` steps) with the same command.
"""

from r1jax.data.prompts import R1_ZERO_SYSTEM
from r1jax.rl.config import grpo_config


def get_config():
    return grpo_config(
        run_dir="runs/grpo_gsm8k",
        init="",  # your HF checkpoint folder (config.json, *.safetensors, tokenizer files)
        train_data="",  # GSM8K train JSONL as distributed
        eval_data="",  # optional held-out JSONL (GSM8K test), scored every eval_every steps
        problem_key="question",
        answer_key="answer",
        answer_format="gsm8k",
        prompt_style="chat",
        system_prompt=R1_ZERO_SYSTEM,
        user_template="{problem}",
        rewards={"accuracy": 1.0, "format": 0.5},
        format_template="r1_zero",
        group_size=8,
        prompts_per_step=16,
        max_new_tokens=1024,
        temperature=1.0,
        top_p=1.0,
        steps=500,
        mu=1,
        minibatches=4,
        grad_accum=1,
        loss_kwargs=dict(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.0, loss_agg="token-mean", kl_estimator="k3"),
        optimizer=dict(learning_rate=1e-6, schedule="constant", warmup_steps=0, weight_decay=0.0, grad_clip=1.0),
        param_dtype="float32",
        dtype="bfloat16",
        remat_policy="full",
        logprob_chunk=256,
        save_dtype="bfloat16",
        eval_every=50,
        eval_problems=256,
        eval_k=4,
        save_every=25,
    )
