#!/usr/bin/env python3
"""Write the toy R1-Zero data to a folder, so the formats can be read and reused:

  OUT/train.jsonl      RL training problems (prompt, problem, answer, answer_text, task, level, id)
  OUT/heldout.jsonl    held-out evaluation problems (same fields; disjoint from all train data)
  OUT/pretrain.jsonl   the pretraining corpus (prompt, completion, text, mode, ...)
  OUT/sft.jsonl        worked/check SFT pairs (prompt, completion, ...)
  OUT/tokenizer/       tokenizer.json + tokenizer_config.json (the toy word-level tokenizer)
  OUT/README.txt       one example document per mode, and token-length statistics

  python tools/make_toy_data.py --out runs/toy_data [--n-pretrain 40000] [--languages en,fr --p-mix 0.3]
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from r1jax.toy import corpus as C  # noqa: E402
from r1jax.data.jsonl import write_jsonl  # noqa: E402
from r1jax.toy.tokenizer import save_tokenizer, toy_tokenizer  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-pretrain", type=int, default=40000)
    ap.add_argument("--n-train", type=int, default=5000, help="RL training problems")
    ap.add_argument("--n-heldout", type=int, default=500)
    ap.add_argument("--n-sft", type=int, default=2000)
    ap.add_argument("--levels", default="2,3,4,5")
    ap.add_argument("--tasks", default="add")
    ap.add_argument("--p-direct", type=float, default=0.70)
    ap.add_argument("--p-worked", type=float, default=0.24)
    ap.add_argument("--p-check", type=float, default=0.06)
    ap.add_argument("--languages", default="en")
    ap.add_argument("--p-mix", type=float, default=0.0)
    ap.add_argument("--mix-style", default="switch", choices=("switch", "step"))
    ap.add_argument("--prompt-style", default="r1_zero", choices=("r1_zero", "short"))
    args = ap.parse_args(argv)

    out = pathlib.Path(args.out)
    levels = tuple(int(x) for x in args.levels.split(","))
    tasks = tuple(args.tasks.split(","))
    languages = tuple(args.languages.split(","))
    common = dict(levels=levels, tasks=tasks, prompt_style=args.prompt_style)

    train = C.eval_records(args.n_train, args.seed, split="train", language=languages[0], **common)
    held = C.eval_records(args.n_heldout, args.seed, split="heldout", language=languages[0], **common)
    docs = C.make_pretrain_corpus(
        args.n_pretrain, args.seed, p_direct=args.p_direct, p_worked=args.p_worked, p_check=args.p_check,
        languages=languages, p_mix=args.p_mix, mix_style=args.mix_style, **common)
    sft = C.make_sft_records(args.n_sft, args.seed, mode="mixed", levels=levels, tasks=tasks,
                             language=languages[0], prompt_style="r1_zero" if args.prompt_style == "r1_zero" else "chat")
    for name, recs in (("train", train), ("heldout", held), ("pretrain", docs), ("sft", sft)):
        write_jsonl(out / f"{name}.jsonl", recs)
    tok = toy_tokenizer()
    save_tokenizer(tok, out / "tokenizer")

    lines = [f"toy data, seed {args.seed}, levels {levels}, tasks {tasks}, languages {languages}",
             f"vocab size {tok.vocab_size}", ""]
    lens = collections.defaultdict(list)
    for d in docs:
        lens[(d["mode"], d["level"])].append(len(tok.encode(d["completion"])))
    prompt_len = sum(len(tok.encode(d["prompt"])) for d in docs[:200]) / min(200, len(docs))
    lines.append(f"prompt tokens (mean): {prompt_len:.1f}")
    lines.append("completion tokens, mode/level: count mean max")
    for k in sorted(lens):
        v = lens[k]
        lines.append(f"  {k[0]:7s} L{k[1]}: {len(v):6d} {sum(v) / len(v):6.1f} {max(v):4d}")
    lines.append("")
    for mode in C.MODES:
        ex = next((d for d in docs if d["mode"] == mode), None)
        if ex is not None:
            lines += [f"--- {mode} (answer {ex['answer']}, correct={ex['correct']})", ex["text"], ""]
    (out / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {out}/{{train,heldout,pretrain,sft}}.jsonl and {out}/tokenizer/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
