"""Training (Lightning): typed configs, data with atom-budget batches, the task module, single runs and studies.

``train(config)`` runs one resumable training run; ``run_study(Study(...))`` runs every backbone x strategy x
seed and writes the report. See :mod:`farfield.train.run` and :mod:`farfield.train.study`.
"""
from farfield.train.config import (TASKS, DataConfig, OptimConfig, RunConfig, TaskConfig, TrainConfig,
                                   apply_overrides, load_config)
from farfield.train.run import train
from farfield.train.study import DEFAULT_STRATEGIES, Study, run_study

__all__ = ["DEFAULT_STRATEGIES", "DataConfig", "OptimConfig", "RunConfig", "Study", "TASKS", "TaskConfig",
           "TrainConfig", "apply_overrides", "load_config", "run_study", "train"]
