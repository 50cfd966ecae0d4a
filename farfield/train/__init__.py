"""Training (Lightning): typed configs, data with atom-budget batches, the task module, single runs and studies.

``train(config)`` runs one resumable training run (:mod:`farfield.train.run`); studies of many runs live in
:mod:`farfield.study`.
"""
from farfield.train.config import (TASKS, DataConfig, OptimConfig, RunConfig, TaskConfig, TrainConfig,
                                   apply_overrides, load_config)
from farfield.train.run import train

__all__ = ["DataConfig", "OptimConfig", "RunConfig", "TASKS", "TaskConfig", "TrainConfig", "apply_overrides",
           "load_config", "train"]
