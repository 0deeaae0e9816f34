"""Cold-start SFT of your own HF checkpoint on your prompt/response JSONL, through its chat template.

    r1jax sft --config experiments/sft_cold_start.py --set init=/ckpts/Qwen2.5-1.5B-Instruct \
        --set data=/data/cold_start.jsonl --set completion_key=response --set run_dir=runs/sft_cold_start

Each record's prompt becomes the user message of a conversation rendered by the checkpoint's own
chat template (with `system_prompt`, and the generation prompt); the response is what the assistant
writes after it, followed by the tokenizer's EOS (tokenizer_config's eos_token, e.g. <|im_end|> for
Qwen2.5-Instruct), and only its tokens are trained on. R1's cold-start data puts the reasoning in
<think>...</think> before the answer; with an R1-Distill template whose generation prompt already
ends with "<think>\\n", start responses inside the think block. Examples are packed into rows of
`seq_len` tokens with attention kept within each example.

Memory: fp32 master weights + fp32 Adam, bf16 compute, full remat, the LM head 512 positions at a
time; gradients over `grad_accum` micro-batches weighted by their token counts. run_dir/final is an
HF folder (bf16 weights + tokenizer files and chat template) that transformers and vLLM load.
"""

from r1jax.sft.trainer import sft_config


def get_config():
    return sft_config(
        run_dir="runs/sft_cold_start",
        init="",  # your HF checkpoint folder
        data="",  # JSONL: one {"prompt": ..., "completion": ...} per line (see prompt_key / completion_key)
        prompt_key="prompt",
        completion_key="completion",
        chat_template=True,
        system_prompt="",
        seq_len=4096,
        batch_size=16,
        grad_accum=1,
        epochs=2.0,
        optimizer=dict(learning_rate=1e-5, schedule="cosine", warmup_steps=20, min_lr_ratio=0.1, weight_decay=0.0,
                       grad_clip=1.0),
        param_dtype="float32",
        dtype="bfloat16",
        remat_policy="full",
        logprob_chunk=512,
        save_dtype="bfloat16",
        save_every=200,
        log_every=10,
    )
