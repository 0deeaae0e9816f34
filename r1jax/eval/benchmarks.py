"""Benchmark JSONL readers: MATH-500, GSM8K and any problem/answer file, as the files carry them.

``load_benchmark(path)`` returns one dict per record, ``{"problem": str, "answer": str, **orig}``,
with every original field kept. It is `r1jax.data.prompts.read_prompt_records` with the fields and
the answer format detected from the first record:

- "problem" and "answer" (MATH-500: also solution/subject/level/unique_id; any generic
  problem/answer JSONL): taken as they are (a numeric answer becomes its string);
- "question" and "answer" (GSM8K): problem = question; answer = the text after the last "####"
  with thousands commas removed ("1,600" -> "1600"); the worked solution is kept as "solution".

Bad input fails early with ``BenchmarkFormatError`` (= `r1jax.data.jsonl.JsonlError`, a ValueError)
naming the file and the 1-based line: a line that is not JSON or not an object, a missing or
non-text field, a GSM8K answer without "####", an unrecognised format, an empty file.
"""

from __future__ import annotations

import os

from r1jax.data.jsonl import JsonlError
from r1jax.data.prompts import gsm8k_answer, read_prompt_records
from r1jax.data.records import open_records

__all__ = ["load_benchmark", "BenchmarkFormatError", "gsm8k_final_answer"]

BenchmarkFormatError = JsonlError
gsm8k_final_answer = gsm8k_answer


def _first_record(path: str):
    """The dataset's first record (any format r1jax.data.records reads), or None when it has none."""
    src = open_records(path)
    return src[0] if len(src) else None


def load_benchmark(path) -> list[dict]:
    """Read a benchmark file (MATH-500, GSM8K or generic problem/answer; JSONL, JSON, Parquet or a
    save_to_disk folder); see module doc."""
    path = os.fspath(path)
    first = _first_record(path)
    gsm8k = isinstance(first, dict) and "question" in first and "problem" not in first
    return read_prompt_records(path, problem_key="", answer_key="answer", answer_format="gsm8k" if gsm8k else "raw")
