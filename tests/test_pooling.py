"""``task.pooling=auto``: the readout comes from the dataset (``info["task"]["pooling"]``, per target where the
dataset says so), else ``mean``; a sum-pooled regression over graphs of very different sizes warns."""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from farfield.errors import ConfigError
from farfield.train.config import OptimConfig, TaskConfig, TrainConfig, apply_overrides

SMALL = ["model.backbone_options={hidden: 8, num_layers: 1}", "optim.epochs=1", "run.progress=false",
         "data.batch_size=4"]


def _register(monkeypatch, name, fn, **attrs):
    from farfield import datasets
    for k, v in attrs.items():
        setattr(fn, k, v)
    monkeypatch.setitem(datasets.DATASETS, name, fn)
    return fn


def _pool(*overrides):
    return apply_overrides(TrainConfig(), list(overrides)).task.pooling


@pytest.mark.parametrize("dataset,target,expected", [
    ("folder", None, "mean"),                   # your own proteins: intensive labels by default
    ("qm9", None, "sum"), ("qm9", "U0", "sum"), ("qm9", "zpve", "sum"), ("qm9", "Cv", "sum"),
    ("qm9", "homo", "mean"), ("qm9", "gap", "mean"), ("qm9", "homo,lumo", "mean"),
    ("qm9", "homo,U0", "sum"), ("qm9", "all", "sum"),
    ("smp", None, "sum"), ("smp", "lumo", "mean"), ("smp", "U0_atom", "sum"),
    ("ec", None, "mean"), ("go-mf", None, "mean"), ("go-bp", None, "mean"), ("go-cc", None, "mean"),
    ("psr", None, "mean"), ("rsr", None, "mean"), ("msp", None, "mean"), ("lba", None, "mean"),
    ("peptides_func", None, "mean"), ("peptides_struct", None, "mean"),
])
def test_auto_pooling_per_dataset(dataset, target, expected):
    over = [f"data.dataset={dataset}"] + ([f"data.target={target}"] if target else [])
    cfg = apply_overrides(TrainConfig(), over)
    assert cfg.task.pooling == expected
    assert cfg.to_dict()["task"]["pooling"] == "auto"                       # kept as requested ...
    assert cfg.to_dict(resolved=True)["task"]["pooling"] == expected        # ... resolved for the run key


def test_peptide_electrostatics_follows_its_info(monkeypatch):
    # the benchmark's energies are extensive: sum, as farfield train did before pooling became auto
    assert _pool("data.dataset=peptide_electrostatics") == "sum"
    # a dataset whose info says nothing falls back to mean; one that names a pooling gets it
    _register(monkeypatch, "toy_silent", lambda path=None, **kw: [],
              info={"task": {"kind": "graph_regression", "num_outputs": 1}})
    _register(monkeypatch, "toy_max", lambda path=None, **kw: [],
              info={"task": {"kind": "graph_regression", "num_outputs": 1, "pooling": "max"}})
    _register(monkeypatch, "toy_bad", lambda path=None, **kw: [], info={"task": {"pooling": "median"}})
    assert _pool("data.dataset=toy_silent") == "mean"
    assert _pool("data.dataset=toy_max") == "max"
    with pytest.raises(ConfigError, match="toy_bad.*pooling 'median'"):
        _pool("data.dataset=toy_bad")


def test_folder_with_a_csv_resolves_to_mean(tmp_path):
    (tmp_path / "labels.csv").write_text("id,label\n1abc,0.5\n2xyz,-1.2\n")
    cfg = apply_overrides(TrainConfig(), ["data.dataset=folder", f"data.path={tmp_path / 'labels.csv'}"])
    assert (cfg.task.kind, cfg.task.pooling) == ("graph_regression", "mean")


def test_explicit_pooling_is_honoured_and_keys_match():
    from farfield.train.run import config_hash, config_key
    explicit = apply_overrides(TrainConfig(), ["data.dataset=folder", "task.pooling=sum"])
    assert explicit.task.pooling == "sum" and explicit.to_dict()["task"]["pooling"] == "sum"
    assert _pool("data.dataset=qm9", "task.pooling=mean") == "mean"
    auto = apply_overrides(TrainConfig(), ["data.dataset=folder"])
    same = apply_overrides(TrainConfig(), ["data.dataset=folder", "task.pooling=mean"])
    assert config_key(auto)["task"]["pooling"] == "mean"
    assert config_hash(auto) == config_hash(same) == config_hash(auto.to_dict()) != config_hash(explicit)
    # the resolution follows the dataset through later overrides
    assert apply_overrides(auto, ["data.dataset=qm9"]).task.pooling == "sum"
    # the default benchmark's key is unchanged by the new default (its info says sum)
    old = TrainConfig().to_dict(resolved=True)
    assert old["task"]["pooling"] == "sum"
    with pytest.raises(ConfigError, match="task.pooling must be one of"):
        apply_overrides(TrainConfig(), ["task.pooling=median"])


def test_a_module_pools_with_the_resolved_value():
    from farfield.models import InputSpec, build_backbone
    from farfield.train.module import TaskModule
    bb = build_backbone("schnet", InputSpec(4), hidden=8, num_layers=1, cutoff=5.0)
    assert TaskModule(bb, TaskConfig(), OptimConfig()).task.pooling == "mean"        # auto without a dataset
    assert TaskModule(bb, TaskConfig(pooling="sum"), OptimConfig()).task.pooling == "sum"


# -- the size-spread warning ------------------------------------------------------------------------------
def _dm(sizes, lazy=False):
    if lazy:
        return SimpleNamespace(train=SimpleNamespace(sizes=np.asarray(sizes)))
    return SimpleNamespace(train=[Data(x_s=torch.zeros(n, 1), num_nodes=n) for n in sizes])


@pytest.mark.parametrize("lazy", [False, True])
def test_sum_pooling_over_sizes_spanning_an_order_of_magnitude_warns(lazy):
    from farfield.train.run import check_pooling
    cfg = apply_overrides(TrainConfig(), ["data.dataset=folder", "task.pooling=sum", "task.kind=graph_regression"])
    with pytest.warns(UserWarning, match=r"'folder'.*20 to 1,300 nodes.*task\.pooling=mean"):
        check_pooling(cfg, _dm([20, 300, 1300], lazy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pooling(apply_overrides(TrainConfig(), ["data.dataset=folder"]), _dm([20, 1300], lazy))   # mean
        check_pooling(cfg, _dm([20, 150], lazy))                                        # within 10x
        node = apply_overrides(cfg, ["task.kind=node_regression"])
        check_pooling(node, _dm([20, 1300], lazy))                                      # not pooled
        binary = apply_overrides(cfg, ["task.kind=binary"])
        check_pooling(binary, _dm([20, 1300], lazy))                                    # not a regression


def _sized(k, n):
    g = torch.Generator().manual_seed(k)
    return Data(x_s=torch.randn(n, 4, generator=g), pos=torch.randn(n, 3, generator=g) * 2,
                y=torch.randn(1, 1, generator=g), name=f"g{k}")


def test_train_warns_for_sum_pooling_of_very_different_sizes(monkeypatch, tmp_path):
    from farfield.train.run import train
    graphs = [_sized(k, 3 if k % 2 else 40) for k in range(20)]
    _register(monkeypatch, "toy_sizes", lambda path=None, **kw: list(graphs),
              info={"task": {"kind": "graph_regression", "num_outputs": 1}})
    base = ["data.dataset=toy_sizes", "data.edges=radius:3.0", *SMALL]
    with pytest.warns(UserWarning, match="'toy_sizes'.*3 to 40 nodes"):
        train(apply_overrides(TrainConfig(), base + ["task.pooling=sum", f"run.out={tmp_path / 'sum'}"]),
              quiet=True)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        res = train(apply_overrides(TrainConfig(), base + [f"run.out={tmp_path / 'auto'}"]), quiet=True)
    assert not [w for w in got if "pooling" in str(w.message)]
    assert res["pooling"] == "mean"                                         # reported as resolved
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["pooling"] == "mean"
