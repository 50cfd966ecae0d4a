"""Task layer: task.kind=auto from the dataset, metrics wrapping farfield.metrics, MSP-style pair items, lazy
datasets and LapPE sign flips."""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from farfield import metrics
from farfield.errors import ConfigError, InputError
from farfield.train.config import OptimConfig, TaskConfig, TrainConfig, apply_overrides

SMALL = ["model.backbone_options={hidden: 8, num_layers: 1}", "optim.epochs=1", "run.progress=false",
         "data.batch_size=4"]


def _toy(k, dtype=torch.float32, gen=None):
    gen = gen or torch.Generator().manual_seed(k)
    m = 5 + k % 4
    return Data(x_s=torch.randn(m, 4, generator=gen, dtype=dtype),
                pos=torch.randn(m, 3, generator=gen, dtype=dtype) * 1.5,
                y=torch.randn(1, 1, generator=gen, dtype=dtype), name=f"toy{k}", group=torch.tensor([k // 3]))


def _register(monkeypatch, name, fn, **attrs):
    from farfield import datasets
    for k, v in attrs.items():
        setattr(fn, k, v)
    monkeypatch.setitem(datasets.DATASETS, name, fn)
    return fn


# -- task.kind = auto ----------------------------------------------------------------------------------------
def test_auto_task_comes_from_the_dataset(monkeypatch):
    from farfield.train.run import config_hash, config_key
    cfg = apply_overrides(TrainConfig(), ["data.dataset=peptides_func"])
    assert (cfg.task.kind, cfg.task.num_outputs, cfg.task.monitor) == ("multilabel", 10, "ap")
    assert cfg.to_dict()["task"]["kind"] == "auto" and cfg.to_dict()["task"]["num_outputs"] is None
    assert cfg.to_dict(resolved=True)["task"]["kind"] == "multilabel"
    explicit = apply_overrides(TrainConfig(), ["data.dataset=peptides_func", "task.kind=multilabel",
                                               "task.num_outputs=10", "task.monitor=ap"])
    assert config_hash(cfg) == config_hash(explicit) == config_hash(cfg.to_dict())
    assert config_key(cfg)["task"]["kind"] == "multilabel"
    # the resolution follows the dataset through later overrides
    back = apply_overrides(cfg, ["data.dataset=peptide_electrostatics"])
    assert (back.task.kind, back.task.num_outputs) == ("graph_regression", 1)
    # a named target of a multi-target dataset has one output; the dataset's count is for its default target
    one = apply_overrides(TrainConfig(), ["data.dataset=peptides_struct", "data.target=length_a"])
    assert (one.task.kind, one.task.num_outputs) == ("graph_regression", 1)
    # an explicit count wins at config time (a user's file may define other classes); the trainer checks it
    # against the loaded targets (test_num_outputs_are_checked_against_the_loaded_targets)
    assert apply_overrides(TrainConfig(), ["data.dataset=peptides_func", "task.num_outputs=5"]).task.num_outputs == 5
    with pytest.raises(ConfigError, match="task.monitor must be one of"):
        apply_overrides(TrainConfig(), ["data.dataset=peptides_func", "task.monitor=mae"])
    # an explicit kind wins; the default study's explicit kind is kept
    node = apply_overrides(TrainConfig(), ["data.target=potential", "task.kind=node_regression"])
    assert node.task.kind == "node_regression" and node.task.num_outputs == 1
    _register(monkeypatch, "toy_go", lambda path=None, **kw: [], info={"task": {"kind": "multilabel", "num_outputs": 3,
                                                                               "monitor": "fmax"}})
    go = apply_overrides(TrainConfig(), ["data.dataset=toy_go"])
    assert (go.task.kind, go.task.num_outputs, go.task.monitor) == ("multilabel", 3, "fmax")


def test_num_outputs_are_checked_against_the_loaded_targets():
    from types import SimpleNamespace

    import torch

    from farfield.train.run import task_for_data
    dm = SimpleNamespace(target_mean=torch.zeros(4))
    unset = apply_overrides(TrainConfig(), ["data.dataset=peptides_func"])
    t = task_for_data(unset, dm)
    assert t.num_outputs == 4 and t.kind == "multilabel" and t.requested["num_outputs"] is None
    same = apply_overrides(TrainConfig(), ["data.dataset=peptides_func", "task.num_outputs=4"])
    assert task_for_data(same, dm).num_outputs == 4
    wrong = apply_overrides(TrainConfig(), ["data.dataset=peptides_func", "task.num_outputs=10"])
    with pytest.raises(ConfigError, match="task.num_outputs=10, but the targets of 'peptides_func' have 4"):
        task_for_data(wrong, dm)
    mc = apply_overrides(TrainConfig(), ["task.kind=multiclass", "task.num_outputs=7"])
    assert task_for_data(mc, SimpleNamespace(target_mean=torch.zeros(1))).num_outputs == 7


def test_monitor_and_mode_follow_the_task():
    from farfield.models import InputSpec, build_backbone
    from farfield.train.module import TaskModule
    bb = lambda: build_backbone("schnet", InputSpec(4), hidden=8, num_layers=1, cutoff=10.0)    # noqa: E731
    m = TaskModule(bb(), TaskConfig(kind="multilabel", num_outputs=3, monitor="fmax"), OptimConfig())
    assert (m.monitor, m.mode) == ("fmax", "max")
    m = TaskModule(bb(), TaskConfig(), OptimConfig())                      # auto without a dataset
    assert (m.task.kind, m.task.num_outputs, m.monitor, m.mode) == ("graph_regression", 1, "mae", "min")
    with pytest.raises(ConfigError, match="group_spearman.*without groups"):
        TaskModule(bb(), TaskConfig(kind="graph_regression", num_outputs=1, monitor="group_spearman"), OptimConfig())


# -- metrics -------------------------------------------------------------------------------------------------
def test_metric_wrappers_equal_the_numpy_functions():
    from farfield.train.module import NumpyMetric
    g = np.random.default_rng(0)
    p, t, grp = g.normal(size=(40, 2)), g.normal(size=(40, 2)), np.repeat(np.arange(8), 5)
    for name, ref in (("pearson", metrics.pearson), ("spearman", metrics.spearman)):
        m = NumpyMetric(name)
        m.update(torch.tensor(p[:15]), torch.tensor(t[:15]))
        m.update(torch.tensor(p[15:]), torch.tensor(t[15:]))                 # states are concatenated
        want = np.mean([ref(p[:, c], t[:, c]) for c in range(2)])
        assert float(m.compute()) == pytest.approx(want, abs=1e-6)
    m = NumpyMetric("per_group_spearman", groups=True)
    m.update(torch.tensor(p[:22, :1]), torch.tensor(t[:22, :1]), torch.tensor(grp[:22]))
    m.update(torch.tensor(p[22:, :1]), torch.tensor(t[22:, :1]), torch.tensor(grp[22:]))
    assert float(m.compute()) == pytest.approx(metrics.per_group_spearman(p[:, 0], t[:, 0], grp), abs=1e-6)
    y, s = (g.random((30, 6)) < 0.3).astype(float), g.random((30, 6))
    for name, ref in (("fmax", lambda a, b: metrics.fmax(a, b)[0]), ("pair_aupr", metrics.pair_aupr)):
        m = NumpyMetric(name, columns=False)
        m.update(torch.tensor(s[:10]), torch.tensor(y[:10]))
        m.update(torch.tensor(s[10:]), torch.tensor(y[10:]))
        assert float(m.compute()) == pytest.approx(ref(y, s), abs=1e-6)


def test_task_module_reports_the_metrics_of_its_kind():
    from farfield.models import InputSpec, build_backbone
    from farfield.train.module import TaskModule
    gs = [_toy(k) for k in range(9)]
    b = Batch.from_data_list([_edges(g) for g in gs])
    m = TaskModule(build_backbone("schnet", InputSpec(4), hidden=8, num_layers=1, cutoff=10.0),
                   TaskConfig(kind="graph_regression", num_outputs=1), OptimConfig(), grouped=True)
    m._step(b, "val")
    got = {k: float(v) for k, v in m.metrics["val_"].compute().items()}
    with torch.no_grad():
        pred = m(b).reshape(-1).numpy()
    y = b.y.reshape(-1).numpy()
    assert got["val/spearman"] == pytest.approx(metrics.spearman(pred, y), abs=1e-6)
    assert got["val/pearson"] == pytest.approx(metrics.pearson(pred, y), abs=1e-6)
    assert got["val/group_spearman"] == pytest.approx(metrics.per_group_spearman(pred, y, b.group.numpy()), abs=1e-6)
    ml = TaskModule(build_backbone("schnet", InputSpec(4), hidden=8, num_layers=1, cutoff=10.0),
                    TaskConfig(kind="multilabel", num_outputs=3), OptimConfig())
    b.y = (torch.rand(9, 3, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    ml._step(b, "val")
    assert {"val/ap", "val/fmax", "val/aupr"} <= set(ml.metrics["val_"].compute())


def _edges(g, spec="radius:6.0"):
    from farfield.graphs import parse_edge_spec
    return parse_edge_spec(spec).apply(g.clone())


# -- pairs (ATOM3D MSP layout) -------------------------------------------------------------------------------
def _pair(k, dtype=torch.float32):
    gen = torch.Generator().manual_seed(100 + k)
    a, b = 4 + k % 3, 3 + k % 2
    pos = torch.cat([torch.randn(a, 3, generator=gen, dtype=dtype),
                     torch.randn(b, 3, generator=gen, dtype=dtype) + 2.0])
    return Data(x_s=torch.randn(a + b, 4, generator=gen, dtype=dtype), pos=pos,
                component=torch.cat([torch.zeros(a, dtype=torch.long), torch.ones(b, dtype=torch.long)]),
                y=torch.tensor([[float(k % 2)]], dtype=dtype), name=f"pair{k}", graph_key=torch.tensor([k]))


@pytest.fixture
def pairs(monkeypatch):
    items = [_pair(k) for k in range(12)]
    _register(monkeypatch, "toy_pairs", lambda path=None, **kw: [g.clone() for g in items],
              info={"task": {"kind": "binary", "num_outputs": 1}, "pair": True})
    return items


@pytest.mark.parametrize("spec", ["radius:50.0", "radius:2.0+random:3"])
def test_pair_edges_never_cross_components(pairs, spec):
    from farfield.train.data import GraphDataModule
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy_pairs", "data.edges=radius:50.0"]).data
    dm = GraphDataModule(cfg, spec, seed=0)
    dm.setup()
    assert dm.pair
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for b in loader:
            src, tgt = b.edge_index
            assert b.edge_index.shape[1] > 0
            assert torch.equal(b.component[src], b.component[tgt])
            assert torch.equal(b.batch[src], b.batch[tgt])
    bad = pairs[0].clone()
    bad.component = bad.component.flip(0)
    from farfield.graphs import parse_edge_spec
    from farfield.train.data import build_edges
    with pytest.raises(InputError, match="component"):
        build_edges(parse_edge_spec("radius:5.0"), bad, pair=True)


def _pair_module(long_range="attention"):
    from farfield.models import InputSpec
    from farfield.models.config import ModelConfig
    from farfield.train.module import TaskModule
    torch.manual_seed(0)
    model = ModelConfig("schnet", {"hidden": 8, "num_layers": 2, "cutoff": 50.0}, long_range).build(InputSpec(4))
    return TaskModule(model, TaskConfig(kind="binary", num_outputs=1), OptimConfig(), pair=True).double()


def test_pair_head_sees_both_components_separately():
    m = _pair_module().eval()
    from farfield.graphs import parse_edge_spec
    from farfield.train.data import build_edges
    items = [build_edges(parse_edge_spec("radius:50.0"), _pair(k, torch.float64), pair=True) for k in range(3)]
    with torch.no_grad():
        together = m(Batch.from_data_list(items))
        alone = torch.cat([m(Batch.from_data_list([g])) for g in items])
        assert together.shape == (3, 1)
        assert torch.allclose(together, alone, atol=1e-10)                  # a batch of pairs = pair by pair
        changed = items[1].clone()
        mut = changed.component == 1
        changed.x_s[mut] = changed.x_s[mut] + 1.0
        view, n, s, _ = m._encode(Batch.from_data_list([items[1]]))
        view2, n2, s2, _ = m._encode(Batch.from_data_list([changed]))
        assert n == 2
        # the original's node states ignore the mutated structure (its own graph, global attention included)
        assert torch.allclose(s[~mut], s2[~mut], atol=1e-12) and not torch.allclose(s[mut], s2[mut])
        assert not torch.allclose(m(Batch.from_data_list([changed])), alone[1:2])   # the prediction changes


def test_pair_training_end_to_end(pairs, tmp_path):
    from farfield.train.run import train
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy_pairs", "data.edges=radius:4.0",
                                          "model.long_range=virtual_node", *SMALL, f"run.out={tmp_path / 'r'}"])
    assert cfg.task.kind == "binary"
    res = train(cfg, quiet=True)
    assert {"test/auroc", "test/acc", "val/auroc"} <= set(res) and res["params"]["total"] > 0


# -- lazy datasets -------------------------------------------------------------------------------------------
class ToyLazy:
    """A lazy graph sequence: ``seq[i]`` builds graph i anew; raises if more than ``max_alive`` graphs it
    returned are still alive (so a data module holding them all fails)."""

    def __init__(self, n, max_alive=6, official=False):
        self.n, self.max_alive, self.loads = n, max_alive, 0
        self._alive = []
        self.index = {"num_nodes": np.array([5 + k % 4 for k in range(n)], dtype=np.int64),
                      "group": np.arange(n, dtype=np.int64) // 3}
        if official:
            self.index["split"] = np.array([0, 0, 0, 1, 2] * (n // 5) + [0] * (n % 5), dtype=np.int64)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self._alive = [r for r in self._alive if r() is not None]
        if len(self._alive) >= self.max_alive:
            raise RuntimeError(f"{len(self._alive)} graphs alive: the sequence is being held in memory")
        self.loads += 1
        g = _toy(int(i))
        if "split" in self.index:
            g.split = torch.tensor([int(self.index["split"][i])])
        self._alive.append(weakref.ref(g))
        return g


@pytest.mark.parametrize("official", [False, True])
def test_lazy_dataset_streams(monkeypatch, official):
    from farfield.train.data import GraphDataModule, LazySplit
    seq = ToyLazy(30, official=official)
    _register(monkeypatch, "toy_lazy", lambda path=None, **kw: seq)
    _register(monkeypatch, "toy_list", lambda path=None, **kw: [seq[i] for i in range(len(seq))])
    seq.max_alive = 10 ** 6
    ref_cfg = apply_overrides(TrainConfig(), ["data.dataset=toy_list", "data.batch_size=4"]).data
    ref = GraphDataModule(ref_cfg, "radius:4.0")
    ref.setup()
    del ref_cfg
    seq.max_alive, seq.loads = 6, 0
    seq._alive = []
    dm = GraphDataModule(apply_overrides(TrainConfig(), ["data.dataset=toy_lazy", "data.batch_size=4"]).data,
                         "radius:4.0")
    dm.setup()
    assert seq.loads == 30                                          # one streaming pass
    assert isinstance(dm.train, LazySplit) and dm.grouped
    assert [g.name for g in dm.train] == [g.name for g in ref.train]
    assert [g.name for g in dm.test] == [g.name for g in ref.test]
    assert torch.allclose(dm.target_mean, ref.target_mean, atol=1e-6)
    assert torch.allclose(dm.target_std, ref.target_std, atol=1e-6)
    assert dm.max_edge_length == pytest.approx(ref.max_edge_length)
    got = [(list(b.name), b.edge_index.clone()) for b in dm.train_dataloader()]
    want = [(list(b.name), b.edge_index) for b in ref.train_dataloader()]
    assert [x[0] for x in got] == [x[0] for x in want]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(got, want))
    with pytest.raises(InputError, match="num_nodes"):
        _register(monkeypatch, "toy_bad", lambda path=None, **kw: iter(()))
        GraphDataModule(apply_overrides(TrainConfig(), ["data.dataset=toy_bad"]).data, "radius:4.0").setup()


def test_lazy_dataset_trains_with_random_edges(monkeypatch, tmp_path):
    from farfield.train.run import train
    seq = ToyLazy(24)
    _register(monkeypatch, "toy_lazy", lambda path=None, **kw: seq)
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy_lazy", "data.edges=radius:4.0", "model.long_range=random",
                                          "model.long_range_options={n: 2}", *SMALL, f"run.out={tmp_path / 'r'}"])
    res = train(cfg, quiet=True)
    assert "test/mae" in res and np.isfinite(res["test/mae"])


# -- LapPE sign flips ----------------------------------------------------------------------------------------
def test_lap_pe_signs_flip_on_training_batches_only(monkeypatch):
    from farfield.train.data import GraphDataModule
    from farfield.train.run import build_module
    gen = torch.Generator().manual_seed(0)
    graphs = [Data(x_s=torch.rand(6, 5, generator=gen) + 0.5, y=torch.randn(1, 1, generator=gen),
                   edge_index=torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]), name=f"g{k}") for k in range(12)]
    _register(monkeypatch, "toy_pe", lambda path=None, **kw: [g.clone() for g in graphs],
              info={"provides_edges": True}, sign_flip_columns=lambda options: slice(1, 4))
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy_pe", "model.backbone=gcn", *SMALL])
    dm = GraphDataModule(cfg.data, cfg.data.edges)
    dm.setup()
    module, _ = build_module(cfg, dm)
    assert module.sign_flip == slice(1, 4)
    seen = []
    forward = module.model.forward
    module.model.forward = lambda b, *a, **k: (seen.append(b.x_s.clone()), forward(b, *a, **k))[1]
    b0 = next(iter(dm.train_dataloader()))
    x0 = b0.x_s.clone()
    module.training_step(b0.clone(), 0)
    module.validation_step(b0.clone(), 0)
    flipped, clean = seen
    assert torch.equal(clean, x0)                                   # evaluation: untouched
    assert torch.equal(flipped[:, [0, 4]], x0[:, [0, 4]])           # other columns untouched
    ratio = flipped[:, 1:4] / x0[:, 1:4]
    assert set(ratio.unique().tolist()) == {-1.0, 1.0}              # signs only, and some flipped
    for k in range(int(b0.num_graphs)):                             # one sign per graph and eigenvector
        r = ratio[b0.batch == k]
        assert torch.equal(r, r[:1].expand_as(r))
    module.training_step(b0.clone(), 0)
    assert torch.equal(seen[2], flipped)                            # seeded by run seed and step


def test_block_shuffle_reads_each_shard_once_per_epoch():
    import numpy as np

    from farfield.train.data import AtomBudgetBatchSampler
    blocks = np.repeat(np.arange(5), 8)                      # 5 shards of 8 items
    s = AtomBudgetBatchSampler(np.ones(40, int), batch_size=4, max_atoms=100, shuffle=True, seed=3, blocks=blocks)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        order = [i for b in s for i in b]
        assert sorted(order) == list(range(40))
        runs = 1 + int(np.sum(blocks[order][1:] != blocks[order][:-1]))
        assert runs == 5                                     # one contiguous run per shard: each shard loaded once
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]               # still reshuffled every epoch
    plain = AtomBudgetBatchSampler(np.ones(40, int), batch_size=4, max_atoms=100, shuffle=True, seed=3)
    order = [i for b in plain for i in b]
    assert 1 + int(np.sum(blocks[order][1:] != blocks[order][:-1])) > 5


def test_limit_keeps_each_official_split_in_proportion():
    import numpy as np

    from farfield.train.data import limited
    official = np.array([0] * 80 + [1] * 10 + [2] * 10)      # ordered corpus: training items first
    keep = limited(100, 10, official)
    assert len(keep) == 10 and np.bincount(official[keep]).tolist() == [8, 1, 1]
    assert limited(100, 10).tolist() == list(range(10))      # no official split: the first N
    assert limited(100, 0, official).tolist() == list(range(100))
    assert len(limited(7, 5, np.array([0, 0, 0, 1, 1, 2, 2]))) == 5


def test_multilabel_with_a_single_label_has_metrics():
    import torch

    from farfield.train.module import _metrics
    m = _metrics("multilabel", 1)
    m.update(torch.tensor([[0.9], [0.2], [0.6]]), torch.tensor([[1], [0], [0]]))
    out = m.compute()
    assert {"ap", "fmax", "aupr", "f1"} <= set(out) and float(out["ap"]) == 1.0


def test_a_3d_backbone_on_2d_graphs_fails_before_training(monkeypatch):
    from types import SimpleNamespace

    import torch
    from torch_geometric.data import Data

    from farfield.train.run import _check_positions
    cfg = apply_overrides(TrainConfig(), ["model.backbone=schnet"])
    flat = SimpleNamespace(train=[Data(x_s=torch.zeros(3, 2), num_nodes=3)])
    with pytest.raises(ConfigError, match="needs 3D coordinates.*gcn"):
        _check_positions(cfg, flat)
    _check_positions(apply_overrides(TrainConfig(), ["model.backbone=gcn"]), flat)        # 2D backbone: fine
    _check_positions(cfg, SimpleNamespace(train=[Data(x_s=torch.zeros(3, 2), pos=torch.zeros(3, 3))]))


def test_multiclass_trains_end_to_end(monkeypatch, tmp_path):
    """Class indices are not standardised: a 3-class task builds and trains (targets [1, 1] per graph)."""
    from farfield.train.run import train

    def toy_classes(path=None, **kw):
        out = []
        for k in range(18):
            g = _toy(k)
            g.y = torch.tensor([[k % 3]], dtype=torch.float32)
            del g.group
            out.append(g)
        return out
    _register(monkeypatch, "toy_classes", toy_classes, info={"task": {"kind": "multiclass", "num_outputs": 3}})
    cfg = apply_overrides(TrainConfig(), ["data.dataset=toy_classes", "data.edges=radius:4.0",
                                          f"run.out={tmp_path / 'run'}", *SMALL])
    assert (cfg.task.kind, cfg.task.num_outputs) == ("multiclass", 3)
    res = train(cfg, quiet=True)
    assert 0 <= res["test/acc"] <= 1
