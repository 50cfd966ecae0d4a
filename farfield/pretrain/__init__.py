"""Pretraining on structure corpora and fine-tuning from it.

* :mod:`farfield.pretrain.tasks` - ProteinWorkshop's pretraining tasks (Jamasb et al., ICLR 2024): corruptions,
  targets, heads and losses, combinable with any backbone and long-range strategy.
* :mod:`farfield.pretrain.nerf` - backbone torsions and NeRF rebuilding (torsional denoising).
* :mod:`farfield.pretrain.module` - the Lightning module (weighted task losses, each logged).
* :mod:`farfield.pretrain.run` - ``pretrain(config)``, resumable, exporting ``backbone.pt``.
* :mod:`farfield.pretrain.finetune` - loading ``backbone.pt`` into a training run (``model.init``), refusing a
  checkpoint whose featuriser or architecture differs.

Corpora (folders of structure files or Foldcomp databases, featurised once into a sharded store and streamed)
are the ``corpus`` dataset, :mod:`farfield.datasets.corpus`.
"""
from farfield.pretrain.tasks import TASKS, Corruption, PretrainTask, build_tasks

__all__ = ["TASKS", "Corruption", "PretrainTask", "build_tasks"]
