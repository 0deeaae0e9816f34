"""Benchmark JSONL readers.

``load_benchmark(path)`` returns one dict per record, ``{"problem": str, "answer": str, **orig}``,
with every original field kept as-is. The format is detected from the fields of the first record
and every later record must have the same required fields:

- "problem" and "answer" (MATH-500: also solution/subject/level/unique_id; any generic
  problem/answer JSONL): taken as they are. A numeric answer is turned into its string.
- "question" and "answer" (GSM8K): problem = question; answer = the text after the last
  "#### " with thousands commas removed ("1,600" -> "1600"); the original worked solution (the
  GSM8K "answer" field) is kept under "solution".

Bad input fails early with ``BenchmarkFormatError`` (a ValueError) naming the file and the
1-based line number: a line that is not valid JSON or not a JSON object, a missing or non-text
field, a GSM8K answer without "####", an unrecognised format, or an empty file. Blank lines are
skipped.
"""

from __future__ import annotations

import json
import os

__all__ = ["load_benchmark", "BenchmarkFormatError", "gsm8k_final_answer"]


class BenchmarkFormatError(ValueError):
    """A benchmark file that cannot be read; the message names the file and line."""


def gsm8k_final_answer(solution: str) -> str | None:
    """The final answer of a GSM8K solution: text after the last '####', commas stripped."""
    if "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def _detect(rec: dict) -> str | None:
    if "problem" in rec:
        return "problem"
    if "question" in rec:
        return "gsm8k"
    return None


def _text(rec, field, where):
    if field not in rec:
        raise BenchmarkFormatError(f"{where}: missing field {field!r} (fields: {sorted(rec)})")
    v = rec[field]
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise BenchmarkFormatError(f"{where}: field {field!r} must be text, got {type(v).__name__}: {v!r:.80}")
    return v if isinstance(v, str) else str(v)


def load_benchmark(path) -> list[dict]:
    """Read a benchmark JSONL file (MATH-500, GSM8K or generic problem/answer); see module doc."""
    path = os.fspath(path)
    records: list[dict] = []
    kind = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkFormatError(f"{where}: malformed JSON line ({e.msg} at column {e.colno})") from e
            if not isinstance(rec, dict):
                raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if kind is None:
                kind = _detect(rec)
                if kind is None:
                    raise BenchmarkFormatError(
                        f"{where}: unrecognised benchmark format: need fields 'problem' and 'answer' "
                        f"(MATH/generic) or 'question' and 'answer' (GSM8K); got {sorted(rec)}"
                    )
            if kind == "problem":
                problem = _text(rec, "problem", where)
                answer = _text(rec, "answer", where)
                rest = {k: v for k, v in rec.items() if k not in ("problem", "answer")}
                records.append({"problem": problem, "answer": answer, **rest})
            else:
                problem = _text(rec, "question", where)
                solution = _text(rec, "answer", where)
                answer = gsm8k_final_answer(solution)
                if answer is None:
                    raise BenchmarkFormatError(f"{where}: GSM8K field 'answer' has no '#### <final answer>'")
                rest = {k: v for k, v in rec.items() if k != "answer"}
                records.append({"problem": problem, "answer": answer, **rest, "solution": solution})
    if not records:
        raise BenchmarkFormatError(f"{path}: no records (empty file)")
    return records
