"""``farfield study``: a controlled comparison of arms (config overrides) against a control, on every backbone,
paired by seed, with reference baselines, Student-t intervals, Holm-corrected tests and a report.

The parts, in the order data flows through them:

* :mod:`~farfield.study.arms`: what an arm is (a name plus overrides) and how arms are declared (strategies,
  ``--arm``, YAML ``arms:``, factorial :func:`grid`);
* :mod:`~farfield.study.plan`: the :class:`Study`, its runs and their directories, the parameter-matched control;
* :mod:`~farfield.study.execute`: training the runs in worker processes, ETA, clean stops;
* :mod:`~farfield.study.baselines`: the reference baselines on the study's split;
* :mod:`~farfield.study.summary`: the statistics;
* :mod:`~farfield.study.diagnostics`: where each arm's trained models take their information from (range measure,
  influence against distance);
* :mod:`~farfield.study.report`: tables, ``report.md``, CSV / JSON, plots.

Output directory::

    OUT/runs/<backbone>/<arm>/seed<k>[-split<s>]-<hash>/   one training run each (config.yaml, checkpoints, logs,
                                                          metrics.json); <hash> = config_hash(config)
    OUT/results.csv, OUT/results.json                     one row per run, the summary and the baselines
    OUT/report.md                                         the tables and how to read them
    OUT/metric.png, OUT/curves.png, OUT/cost.png          plots
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from farfield.errors import ConfigError
from farfield.study.arms import NOISY, Arm, grid, split_noisy, strategy_arm
from farfield.study.baselines import longest_distance, reference_baselines, task_kind
from farfield.study.execute import Signals, estimate_remaining, execute, execution_order
from farfield.study.plan import DEFAULT_STRATEGIES, WIDE, RunSpec, Study, matched_width, total_params
from farfield.study.report import format_table, report_markdown, write_outputs
from farfield.study.summary import summarize

__all__ = ["Arm", "DEFAULT_STRATEGIES", "NOISY", "RunSpec", "Study", "WIDE", "estimate_remaining", "execution_order",
           "format_table", "grid", "matched_width", "reference_baselines", "report_markdown", "run_study",
           "split_noisy", "strategy_arm", "summarize", "total_params"]


def run_study(study: Study, quiet: bool = False, log=None, diagnose: bool = True) -> dict:
    """Run (or resume) every run of ``study``; compute the reference baselines; write results and the report;
    return the summary. Progress lines go to ``log`` (default stderr). SIGINT / SIGTERM raise
    :class:`~farfield.train.run.Interrupted` after the workers have stopped at a safe point (finished epochs are
    kept). ``diagnose``: add each arm's range measure and influence profile to the report
    (:mod:`farfield.study.diagnostics`)."""
    from farfield.train.data import GraphDataModule
    log = log or sys.stderr
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    with Signals():
        baselines, wide, counts, split_source = {}, {}, {}, "seeded"
        for split in study.split_seeds:
            base = replace(study.base, data=replace(study.base.data, split_seed=int(split)))
            dm = GraphDataModule(base.data, base.data.edges, seed=0, standardize=base.task.standardize)
            dm.setup()
            if len(study.split_seeds) > 1 and getattr(dm, "split_source", "seeded") == "official":
                raise ConfigError(f"study: --split-seeds {' '.join(map(str, study.split_seeds))} on "
                                  f"{study.base.data.dataset!r}, which has its own (official) split: every split "
                                  "seed would train the same runs and pair them as independent; use one split seed")
            baselines[str(int(split))] = reference_baselines(dm, task_kind(base))
            split_source = getattr(dm, "split_source", "seeded")
            if study.param_matched and not wide and len(study.all_arms()) > 1:
                wide, counts = matched_width(study, dm.input_spec, longest_distance(dm), bool(getattr(dm, "pair", False)))
        runs = study.runs(wide)
        results, errors = execute(runs, study.workers, log, quiet)
    rows = []
    for i, r in enumerate(runs):
        if i in results and results[i]:
            rows.append({"backbone": r.backbone, "arm": r.arm, "seed": r.seed, "split_seed": r.split_seed,
                         "run_dir": r.cfg.run.out, **results[i]})
    summary = summarize(rows, study, baselines)
    summary["split"] = split_source
    summary["failed"] = [{"backbone": runs[i].backbone, "arm": runs[i].arm, "seed": runs[i].seed,
                          "error": e} for i, e in errors.items()]
    summary["param_matching"] = {b: {**wide.get(b, {}), **counts.get(b, {})} for b in wide}
    if diagnose and rows:
        try:
            from farfield.study.diagnostics import study_diagnostics
            summary["diagnostics"] = study_diagnostics(rows, study, quiet=quiet, log=log)
        except ImportError:
            pass
    write_outputs(out, rows, summary, study)
    return summary
