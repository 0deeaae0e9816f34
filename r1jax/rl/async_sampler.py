"""Asynchronous GRPO: a sampler thread that generates (and scores) the next steps' rollouts while the
trainer updates, each step's samples drawn by weights at most `max_staleness` versions behind.

    history = WeightHistory(keep=k + 1)
    history.publish(start, rollout_weights)            # version = GRPO steps applied to the weights
    sampler = Sampler(produce, range(start, steps), k, history).start()
    for step in range(start, steps):
        item = sampler.take()                          # produced by produce(step, version, weights)
        ... update ...
        history.publish(step + 1, new_rollout_weights)
    sampler.stop()

Schedule ("fixed lag"): the rollout of step s is drawn by version v(s) = max(start, s - k) exactly,
never a newer one. So a run is a function of its seed and k (the same on every rerun, whatever the
timing), k = 0 is the synchronous loop (version s is the weights after step s - 1's update), and the
sampler runs at most k steps ahead of the trainer (its queue holds k items). The cost: up to k + 1
versions of the rollout weights are alive at once (the history drops a version once no later step
can ask for it). With in-flight updates (the continuous engine's `weight_source`) a step's later
tokens may come from newer versions (`newest`); the lag bound still holds (versions only grow), the
interleaving then depends on timing and is recorded per token, not replayed.

Threads: the sampler's programs and the trainer's run at once (XLA releases the GIL while a program
runs); with `sampler_devices` they run on disjoint devices, otherwise they share them. An error in
the sampler is raised by the trainer's next `take`.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time

import jax


class WeightHistory:
    """The rollout weights published by the trainer, by version; thread-safe."""

    def __init__(self, keep: int):
        self.keep = max(int(keep), 1)
        self._cv = threading.Condition()
        self._weights: dict[int, object] = {}
        self._pushed: dict[int, float] = {}  # version -> seconds from its publication to its arrival
        self._closed = False

    def publish(self, version: int, weights) -> None:
        """`weights` may still be in flight (dispatched copies): a watcher thread measures when they
        arrive (`push_seconds`), the sampler waits for them when it takes them."""
        with self._cv:
            self._weights[int(version)] = weights
            for v in [v for v in self._weights if v <= version - self.keep]:  # no later step asks for these
                del self._weights[v]
            # push times outlive their weights (a sampler holding a dropped version still asks for its
            # time: "drop" keeps one version); the old ones go
            for v in [v for v in self._pushed if v <= version - 64]:
                del self._pushed[v]
            self._cv.notify_all()
        threading.Thread(target=self._watch, args=(int(version), weights, time.perf_counter()), daemon=True).start()

    def _watch(self, version: int, weights, t0: float) -> None:
        try:
            jax.block_until_ready(weights)
        except Exception:  # noqa: BLE001 - deleted with its version: the time is still recorded, nothing waits
            pass
        finally:
            with self._cv:
                self._pushed[version] = time.perf_counter() - t0
                self._cv.notify_all()

    def get(self, version: int):
        """The weights of exactly `version`, waiting until they are published (None once closed)."""
        with self._cv:
            self._cv.wait_for(lambda: self._closed or version in self._weights)
            if version not in self._weights:
                if self._closed:
                    return None
                raise KeyError(f"weights version {version} were dropped (kept: {sorted(self._weights)})")
            return self._weights[version]

    def push_seconds(self, version: int) -> float:
        """Seconds from the publication of `version` until its weights were on their devices (waits for
        them: measured by a watcher thread started at publication, whenever the sampler takes them)."""
        with self._cv:
            self._cv.wait_for(lambda: self._closed or version in self._pushed)
            return self._pushed.get(int(version), 0.0)

    def newest(self):
        """(version, weights) of the newest published version ((None, None) once closed)."""
        with self._cv:
            if self._closed or not self._weights:
                return None, None
            v = max(self._weights)
            return v, self._weights[v]

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._weights.clear()
            self._cv.notify_all()


class _Failed:
    def __init__(self, error):
        self.error = error


POLICIES = ("wait", "drop")


class Sampler:
    """Runs `produce(index, version, weights) -> item` in a thread and hands the items over in order.

    policy "wait" (fixed lag): item i (= step i, for i in `steps`) is drawn by the weights of exactly
    version max(steps.start, i - max_staleness), waited for. policy "drop": the sampler never waits
    for weights; item i (i = steps.start, steps.start + 1, ... without end) is drawn by the newest
    published version, and the trainer drops an item whose version is more than max_staleness behind
    the step it would train (`take_fresh`)."""

    def __init__(self, produce, steps: range, max_staleness: int, history: WeightHistory, policy: str = "wait"):
        if policy not in POLICIES:
            raise ValueError(f"Sampler: policy={policy!r} must be one of {POLICIES}")
        self.produce, self.steps, self.k, self.history, self.policy = produce, steps, int(max_staleness), history, policy
        self.items: queue.Queue = queue.Queue(maxsize=max(self.k, 1))
        self._stop = threading.Event()
        self.idle_s = 0.0  # the sampler waiting for weights or for room in the queue
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name="r1jax-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def version_of(self, step: int) -> int:
        return max(self.steps.start, step - self.k)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        """Produces the steps in order. Each item (a dict) gets "sampler_idle_s": the time the sampler
        waited before producing it (for room in the queue after the previous item, then for its
        weights) and "sampler_busy_s": the time producing it."""
        try:
            waited = 0.0
            indices = self.steps if self.policy == "wait" else itertools.count(self.steps.start)
            for step in indices:
                if self._stop.is_set():
                    return
                t0 = time.perf_counter()
                if self.policy == "wait":
                    version = self.version_of(step)
                    weights = self.history.get(version)
                else:
                    version, weights = self.history.newest()
                if weights is None:  # closed
                    return
                push_s = self.history.push_seconds(version)  # waits until they arrived
                t1 = time.perf_counter()
                item = self.produce(step, version, weights)
                t2 = time.perf_counter()
                del weights
                item["sampler_idle_s"], item["sampler_busy_s"] = waited + t1 - t0, t2 - t1
                item["push_s"] = push_s
                self.idle_s += item["sampler_idle_s"]
                self.busy_s += item["sampler_busy_s"]
                if not self._put(item):
                    return
                waited = time.perf_counter() - t2
        except BaseException as e:  # noqa: BLE001 - handed to the trainer's thread
            self._put(_Failed(e))

    def take(self):
        """The next step's item (raises the sampler's error) -> (item, seconds the trainer waited)."""
        t0 = time.perf_counter()
        while True:
            try:
                item = self.items.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the sampler thread ended without producing the next step's rollout")
        if isinstance(item, _Failed):
            raise item.error
        return item, time.perf_counter() - t0

    def take_fresh(self, step: int):
        """The next item at most max_staleness versions behind `step` ("drop": older ones are dropped)
        -> (item, seconds waited, items dropped)."""
        dropped, waited = 0, 0.0
        while True:
            item, w = self.take()
            waited += w
            if self.policy == "wait" or step - item["version"] <= self.k:
                return item, waited, dropped
            dropped += 1

    def stop(self) -> None:
        self._stop.set()
        self.history.close()
        # no timeout: a rollout in progress cannot be abandoned; the run does not go on (checkpoint,
        # export, the next stage) while the thread still uses the devices
        self._thread.join()
