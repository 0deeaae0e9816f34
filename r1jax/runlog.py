"""Run logging: TensorBoard scalars (tensorboardX), a metrics.jsonl history, and PNG plots.

    log = RunLogger(run_dir)
    log.scalars(step, {"reward/accuracy": 0.4, ...})
    log.plot(run_dir / "curves.png", [("eval/pass@1", "held-out pass@1"), ...])
    log.close()

`metrics.jsonl` is appended line by line (a killed run keeps its history, a line cut short by the
kill is dropped; a resumed run drops the lines of steps past the checkpoint it restarts from, so the
history has each step once).
"""

from __future__ import annotations

import json
import math
import os


class RunLogger:
    def __init__(self, run_dir: str | os.PathLike, resume_step: int | None = None, tensorboard: bool = True,
                 writes: bool = True):
        """writes=False (e.g. a process other than 0 of a multi-process run): the history is kept in
        memory, nothing is written."""
        self.run_dir = os.fspath(run_dir)
        self.writes = writes
        self.path = os.path.join(self.run_dir, "metrics.jsonl")
        self.history: list[dict] = []
        self.writer = None
        if not writes:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        if os.path.exists(self.path):
            rows = self._read_rows() if resume_step is not None else []
            if resume_step is not None:
                rows = [r for r in rows if r["step"] <= resume_step]
            self.history = rows
            tmp = self.path + ".tmp"  # rewritten atomically: a kill here keeps the old file
            with open(tmp, "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
            os.replace(tmp, self.path)
        if tensorboard:
            from tensorboardX import SummaryWriter  # heavy (protobuf): loaded only with tensorboard=True

            self.writer = SummaryWriter(os.path.join(self.run_dir, "tb"))

    def _read_rows(self) -> list[dict]:
        """The rows of metrics.jsonl; a last line cut short (the process was killed while writing it)
        is dropped, a malformed line elsewhere fails naming the file and line."""
        with open(self.path) as f:
            lines = f.read().split("\n")
        rows = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # no newline after it: a partial write
                    break
                raise ValueError(f"{self.path}:{i + 1}: not a JSON line: {line[:80]!r}") from None
        return rows

    def scalars(self, step: int, values: dict) -> None:
        row = {"step": int(step)}
        for k, v in values.items():
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            row[k] = v
            if self.writer is not None and math.isfinite(v):
                self.writer.add_scalar(k, v, int(step))
        self.history.append(row)
        if not self.writes:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in self.history:
            if key in r:
                xs.append(r["step"])
                ys.append(r[key])
        return xs, ys

    def plot(self, path: str | os.PathLike, panels: list[tuple[str, str]], title: str = "") -> str:
        """One subplot per (metric key, label); missing keys are skipped."""
        import matplotlib  # heavy (~0.5 s): loaded only when a plot is drawn

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [(k, lab) for k, lab in panels if self.series(k)[0]]
        if not panels or not self.writes:
            return ""
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, (k, lab) in zip(axes[0], panels):
            xs, ys = self.series(k)
            ax.plot(xs, ys, marker="o" if len(xs) < 40 else None, ms=3)
            ax.set_title(lab)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return os.fspath(path)

    def close(self):
        if self.writer is not None:
            self.writer.close()


def write_results(run_dir: str | os.PathLike, results: dict, table: str, *, png: str, tag: str,
                  minutes: float) -> str:
    """A finished job's figures: results.json and results.md (the markdown `table`) in run_dir; prints
    the table and what was written (png: the job's plot). -> the results.json path."""
    path = os.path.join(run_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"[{tag}] wrote {path} and {png} ({minutes:.1f} min)")
    return path
