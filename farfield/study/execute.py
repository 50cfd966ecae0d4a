"""Executing a study's runs: in this process or in worker processes at one thread each, interleaved across arms,
with an ETA costed per arm, and a clean stop on SIGINT / SIGTERM (finished epochs are kept; re-running resumes).

Independent runs in parallel use a small CPU better than one multi-threaded run, and single-threaded CPU kernels
make every run reproducible.
"""
from __future__ import annotations

import json
import math
import queue
import signal
import time
from pathlib import Path

import numpy as np

from farfield.study.plan import RunSpec
from farfield.train.config import TrainConfig
from farfield.train.run import Interrupted

__all__ = ["execution_order", "estimate_remaining", "execute", "Signals", "fmt_duration"]

_DATAMODULES: dict = {}


def _datamodule(cfg: TrainConfig):
    from farfield.train.data import GraphDataModule
    spec = cfg.model.edge_spec(cfg.data.edges)
    key = (spec, json.dumps(cfg.to_dict()["data"], sort_keys=True), cfg.task.standardize)
    if key not in _DATAMODULES:
        _DATAMODULES[key] = GraphDataModule(cfg.data, spec, seed=cfg.run.seed, standardize=cfg.task.standardize)
    dm = _DATAMODULES[key]
    dm.seed = cfg.run.seed
    return dm


def _train_one(cfg_dict: dict) -> dict:
    from farfield.train.run import train
    cfg = TrainConfig.from_dict(cfg_dict)
    return train(cfg, datamodule=_datamodule(cfg), quiet=True)


def _worker(tasks, results) -> None:
    """A study worker process: one thread, runs until it gets None; SIGINT is left to the parent, which
    forwards SIGTERM (Lightning then stops at the next batch boundary). Messages to the parent:
    ``("start", i, None)`` when run i begins, ``("done", i, (result, error, wall seconds))`` when it ends."""
    import torch
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    while True:
        job = tasks.get()
        if job is None:
            return
        i, cfg_dict = job
        results.put(("start", i, None))
        t = time.perf_counter()
        try:
            results.put(("done", i, (_train_one(cfg_dict), None, time.perf_counter() - t)))
        except Interrupted:
            results.put(("done", i, (None, "interrupted", time.perf_counter() - t)))
            return
        except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
            results.put(("done", i, (None, f"{type(e).__name__}: {e}", time.perf_counter() - t)))


def execution_order(runs: list[RunSpec], pending: list[int]) -> list[int]:
    """``pending`` interleaved across arms: seed 0 of every arm, then seed 1, ... (split seeds likewise), so
    that the first finished runs measure every arm's cost and the ETA is not fitted on the cheapest arm alone.
    Results do not depend on the order (each run is independent and keyed by its config)."""
    arm = {}
    for i in pending:
        arm.setdefault((runs[i].backbone, runs[i].arm), len(arm))
    return sorted(pending, key=lambda i: (runs[i].split_seed, runs[i].seed, arm[(runs[i].backbone, runs[i].arm)]))


def estimate_remaining(remaining: list[str], durations: dict[str, list[float]], running: list[tuple[str, float]],
                       workers: int) -> tuple[float, int]:
    """Seconds until the study ends: the wall time still needed by every unfinished run, divided over the
    workers. Each run is costed at the mean wall time of the finished runs of its arm (``durations``: arm ->
    seconds; these are measured on this machine under its current load, so a busier machine gives a longer
    ETA); an arm with no finished run yet is costed at the dearest arm measured so far (a guess, which the
    progress line flags by counting the arms not timed yet; runs are interleaved so that this lasts one round). ``remaining``: the arm of every run not finished (running ones included);
    ``running``: (arm, seconds already spent) of each run in flight, each credited up to 95% of its own
    estimate. Returns (seconds, number of arms not measured yet); NaN seconds before any run has finished."""
    means = {a: float(np.mean(v)) for a, v in durations.items() if v}
    if not means:
        return float("nan"), len(set(remaining))
    fallback = max(means.values())
    cost = lambda a: means.get(a, fallback)
    work = sum(cost(a) for a in remaining)
    work -= sum(min(t, 0.95 * cost(a)) for a, t in running)
    lanes = max(1, min(workers, len(remaining)))
    return max(work, 0.0) / lanes, len({a for a in remaining if a not in means})


class Signals:
    """Turn SIGINT / SIGTERM in the study's process into :class:`Interrupted` at a safe point."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        def handler(signum, frame):
            self.signum = signum
            raise Interrupted(signum)
        self.old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        return False


def execute(runs: list[RunSpec], workers: int, log, quiet: bool) -> tuple[dict, dict]:
    """Train every unfinished run (interleaved across arms, :func:`execution_order`); returns (index -> result,
    index -> error message). Progress lines carry an ETA from :func:`estimate_remaining`."""
    pending = execution_order(runs, [i for i, r in enumerate(runs) if not r.finished])
    results, errors = {}, {}
    for i, r in enumerate(runs):
        if r.finished:
            results[i] = json.loads((Path(r.cfg.run.out) / "metrics.json").read_text())
    t0, n_done = time.perf_counter(), 0
    arm = lambda i: f"{runs[i].backbone}/{runs[i].arm}"
    durations: dict[str, list[float]] = {}
    started: dict[int, float] = {}
    left = set(pending)
    several_splits = len(set(x.split_seed for x in runs)) > 1

    def report(i, what, wall):
        nonlocal n_done
        n_done += 1
        left.discard(i)
        started.pop(i, None)
        durations.setdefault(arm(i), []).append(wall)
        if quiet:
            return
        now = time.perf_counter()
        running = [(arm(j), now - t) for j, t in started.items()]
        eta, unmeasured = estimate_remaining([arm(j) for j in left], durations, running, max(workers, 1))
        note = f" ({unmeasured} arm{'s' if unmeasured != 1 else ''} not timed yet)" if unmeasured and left else ""
        r = runs[i]
        print(f"[study] {n_done}/{len(pending)} trained ({len(runs)} runs, {len(runs) - len(pending)} reused): "
              f"{r.backbone} + {r.arm}, seed {r.seed}{f', split {r.split_seed}' if several_splits else ''}"
              f" {what} in {fmt_duration(wall)}; elapsed {fmt_duration(now - t0)}, ETA {fmt_duration(eta)}{note}", file=log, flush=True)

    if not quiet and len(pending) < len(runs):
        print(f"[study] {len(runs) - len(pending)} of {len(runs)} runs already finished with the same config: reused",
              file=log, flush=True)
    if not pending:
        return results, errors
    if workers == 0:
        for i in pending:
            started[i] = t = time.perf_counter()
            try:
                results[i] = _train_one(runs[i].cfg.to_dict())
                report(i, "done", time.perf_counter() - t)
            except Interrupted:
                raise
            except Exception as e:  # noqa: BLE001
                errors[i] = f"{type(e).__name__}: {e}"
                report(i, f"FAILED ({errors[i]})", time.perf_counter() - t)
        return results, errors

    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    tasks, out_q = ctx.Queue(), ctx.Queue()
    for i in pending:
        tasks.put((i, runs[i].cfg.to_dict()))
    n = min(workers, len(pending))
    for _ in range(n):
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(tasks, out_q), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    received = 0
    try:
        while received < len(pending):
            try:
                kind, i, payload = out_q.get(timeout=1.0)
            except queue.Empty:                  # check that the workers are alive
                if not any(p.is_alive() for p in procs) and out_q.empty():
                    raise RuntimeError("study workers exited unexpectedly") from None
                continue
            if kind == "start":
                started[i] = time.perf_counter()
                continue
            received += 1
            res, err, wall = payload
            if err is None:
                results[i] = res
                report(i, "done", wall)
            else:
                errors[i] = err
                report(i, f"FAILED ({err})", wall)
    except (Interrupted, KeyboardInterrupt):
        for p in procs:
            if p.is_alive():
                p.terminate()            # SIGTERM: Lightning stops at the next batch boundary
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
        raise
    for p in procs:
        p.join(timeout=10)
    return results, errors



def fmt_duration(sec: float) -> str:
    if not math.isfinite(sec):
        return "?"
    m, s = divmod(int(sec), 60)
    return f"{m}m{s:02d}s"
