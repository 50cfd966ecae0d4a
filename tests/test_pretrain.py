"""Pretraining tasks (targets against hand-computed values), their composition with backbones and long-range
strategies, `farfield pretrain` (resume after a kill) and fine-tuning (`model.init`, refusals, freezing)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from farfield.errors import ConfigError, InputError
from farfield.pretrain import tasks as T
from farfield.pretrain.nerf import backbone_torsions, rebuild_backbone, torsion_mask
from farfield.pretrain.tasks import Corruption, build_tasks

ROOT = Path(__file__).resolve().parents[1]
FILES = ("1aki.pdb", "1l2y.pdb", "AF-P04629_alphafold_v2.pdb")


@pytest.fixture
def corpus_dir(structures, tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for f in FILES:
        shutil.copy(structures / f, d / f)
    return d


@pytest.fixture
def store(corpus_dir):
    from farfield.datasets.corpus import CorpusConfig, build_corpus
    return build_corpus(corpus_dir, CorpusConfig(split=(0.34, 0.33, 0.33)), progress=False)


def _graph(store, name):
    for g in store:
        if g.name.split(":")[0] == name:
            return g
    raise KeyError(name)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- targets against hand-computed values ------------------------------------------------------------------------
def test_torsions_match_gemmi(structures):
    """phi / psi of 1l2y (Trp-cage) from our dihedrals equal gemmi's calculate_phi_psi."""
    import gemmi

    from farfield.io.readers import read_structure
    from farfield.io.residues import ResidueView
    s = read_structure(structures / "1l2y.pdb")
    rv = ResidueView.from_structure(s)
    ours = backbone_torsions(rv.backbone, rv.segment_index)
    st = gemmi.read_structure(str(structures / "1l2y.pdb"))
    chain = st[0][0]
    for i in range(1, len(chain) - 1):
        phi, psi = gemmi.calculate_phi_psi(chain[i - 1], chain[i], chain[i + 1])
        assert ours[i, 0] == pytest.approx(phi, abs=1e-5)
        assert ours[i, 1] == pytest.approx(psi, abs=1e-5)
    assert np.isnan(ours[0, 0]) and np.isnan(ours[-1, 1]) and np.isnan(ours[-1, 2])


def test_nerf_rebuild_changes_exactly_the_torsions(structures):
    from farfield.io.readers import read_structure
    from farfield.io.residues import ResidueView
    rv = ResidueView.from_structure(read_structure(structures / "1aki.pdb"))
    bb, seg = rv.backbone, rv.segment_index
    assert np.abs(rebuild_backbone(bb, seg, np.zeros((len(bb), 3))) - bb).max() < 1e-10
    delta = np.random.default_rng(0).normal(0, 0.1, (len(bb), 3))
    new = rebuild_backbone(bb, seg, delta)
    m = torsion_mask(bb, seg)
    d = backbone_torsions(new, seg) - backbone_torsions(bb, seg) - delta
    assert np.abs(np.angle(np.exp(1j * d[m]))).max() < 1e-9
    chain = lambda b: b[:, :3].reshape(-1, 3)                                    # noqa: E731
    bonds = lambda b: np.linalg.norm(np.diff(chain(b), axis=0), axis=1)          # noqa: E731
    assert np.abs(bonds(new) - bonds(bb)).max() < 1e-9
    co = lambda b: np.linalg.norm(b[:, 3] - b[:, 2], axis=1)                     # noqa: E731
    assert np.abs(co(new) - co(bb)).max() < 1e-9


def test_sequence_denoising_targets(store):
    g = _graph(store, "1aki")
    n = g.num_nodes
    c = Corruption(build_tasks({"sequence_denoising": {"rate": 0.25}}), "gvp")
    out = c(g, _gen())
    mask = out[T.SEQ_MASK]
    assert int(mask.sum()) == round(0.25 * n)
    assert torch.equal(out[T.RES_TYPE], g.res_type)                 # targets: the original types
    onehot = out.x_s[:, :21].argmax(1)
    assert torch.equal(onehot, out.res_type)                        # the input shows the corrupted types
    assert torch.equal(out.res_type[~mask], g.res_type[~mask])
    assert torch.equal(out.x_s[:, 21:], g.x_s[:, 21:])              # geometry features unchanged
    assert torch.equal(g.x_s, _graph(store, "1aki").x_s)            # the stored graph is untouched


def test_structure_denoising_targets(store):
    from farfield.features.residues import residue_node_features
    g = _graph(store, "1aki")
    std = 0.1
    out = Corruption(build_tasks({"structure_denoising": {"std": std}}), "gvp")(g, _gen(3))
    eps = out[T.POS_EPS].double()
    assert torch.allclose(out.pos.double(), g.pos.double() + std * eps, atol=1e-5)
    ref_s, ref_v = residue_node_features(g.res_type, out.backbone.double(), g.segment, "gvp")
    assert torch.allclose(out.x_s.double(), ref_s, atol=1e-5)       # features of the noisy backbone
    assert torch.allclose(out.x_v.double(), ref_v, atol=1e-5)
    assert not torch.allclose(out.x_s, g.x_s)


def test_torsional_denoising_targets(store):
    g = _graph(store, "1aki")
    out = Corruption(build_tasks({"torsional_denoising": {"std": 0.05}}), "gvp")(g, _gen(1))
    mask = out[T.TORSION_MASK].numpy()
    before = backbone_torsions(g.backbone.double().numpy(), g.segment.numpy())
    after = backbone_torsions(out.backbone.double().numpy(), g.segment.numpy())
    d = np.angle(np.exp(1j * (after - before - 0.05 * out[T.TORSION_EPS].double().numpy())))
    assert np.abs(d[mask]).max() < 1e-3                              # float32 storage of the rebuilt backbone
    assert torch.all(out[T.TORSION_EPS][~out[T.TORSION_MASK]] == 0)


def test_edge_distance_targets(store):
    g = _graph(store, "1aki")
    out = Corruption(build_tasks({"edge_distance_prediction": {"max_pairs": 40}}), "gvp")(g, _gen(2))
    i, j = out[T.PAIR_INDEX]
    assert 0 < len(i) <= 40
    ca = g.backbone[:, 1].double().numpy()
    want = np.linalg.norm(ca[i.numpy()] - ca[j.numpy()], axis=1)
    assert np.allclose(out[T.PAIR_DIST].numpy(), want, atol=1e-4)   # clean CA-CA distances
    assert (want <= 10.0).all()
    moved = torch.zeros(g.num_nodes, dtype=torch.bool)
    moved[out[T.PAIR_INDEX].reshape(-1)] = True
    assert not torch.allclose(out.pos[moved], g.pos[moved])          # their coordinates are hidden by noise
    assert torch.equal(out.pos[~moved], g.pos[~moved])


def test_plddt_target_is_the_alphafold_bfactor(store, structures):
    import gemmi
    g = _graph(store, "AF-P04629_alphafold_v2")
    out = Corruption(build_tasks(["plddt_prediction"]), "gvp")(g, _gen())
    st = gemmi.read_structure(str(structures / "AF-P04629_alphafold_v2.pdb"))
    ca_b = [r["CA"][0].b_iso for r in st[0][0]]
    assert np.allclose(out[T.PLDDT].numpy(), ca_b, atol=1e-4)


def test_plddt_needs_plddt(store):
    g = _graph(store, "1aki")
    with pytest.raises(InputError, match="pLDDT"):
        Corruption(build_tasks(["plddt_prediction"]), "gvp")(g, _gen())


def test_inverse_folding_hides_the_sequence(store):
    g = _graph(store, "1aki")
    out = Corruption(build_tasks(["inverse_folding"]), "gvp")(g, _gen())
    assert torch.all(out.x_s[:, :21] == 0)
    assert torch.equal(out[T.RES_TYPE], g.res_type)
    assert torch.equal(out.pos, g.pos)


def test_task_combinations_and_options_are_checked():
    with pytest.raises(ConfigError, match="both change residue types"):
        build_tasks(["inverse_folding", "sequence_denoising"])
    with pytest.raises(ConfigError, match="both corrupt coordinates"):
        build_tasks(["structure_denoising", "torsional_denoising"])
    with pytest.raises(ConfigError, match="unknown pretraining task"):
        build_tasks(["folding"])
    with pytest.raises(ConfigError, match="unknown option"):
        build_tasks({"structure_denoising": {"sigma": 1}})
    with pytest.raises(ConfigError, match="rate"):
        build_tasks({"sequence_denoising": {"rate": 0}})
    with pytest.raises(ConfigError, match="side-chain"):
        Corruption(build_tasks(["inverse_folding"]), "ca_sc")
    assert [t.name for t in build_tasks({"sequence_structure_denoising": 1, "plddt_prediction": 0.5})] == \
        ["sequence_structure_denoising", "plddt_prediction"]


# -- data module: draws per epoch, fixed evaluation draws, clean fine-tuning data ---------------------------------
@pytest.fixture
def af_dir(structures, tmp_path):
    """Three copies of the AlphaFold model (every item has pLDDT)."""
    d = tmp_path / "af"
    d.mkdir()
    for k in range(3):
        shutil.copy(structures / "AF-P04629_alphafold_v2.pdb", d / f"AF-P04629-copy{k}.pdb")
    return d


def _dm(corpus_dir, tasks=("structure_denoising",), labelled=False):
    from farfield.train.config import DataConfig
    from farfield.train.data import GraphDataModule
    cfg = DataConfig(dataset="corpus", path=str(corpus_dir), edges="radius:10.0", batch_size=4,
                     options={"split": [0.34, 0.33, 0.33], "progress": False})
    dm = GraphDataModule(cfg, cfg.edges, seed=0, standardize=False, labelled=labelled)
    dm.setup()
    return dm.with_transform(Corruption(build_tasks(list(tasks)), "gvp")), dm


def test_corruption_fresh_per_training_epoch_fixed_for_evaluation(corpus_dir):
    dm, clean = _dm(corpus_dir)
    tr = dm.train_dataloader()
    a = next(iter(tr))[T.POS_EPS]
    tr.batch_sampler.set_epoch(1)
    b = next(iter(tr))[T.POS_EPS]
    tr.batch_sampler.set_epoch(0)
    c = next(iter(tr))[T.POS_EPS]
    assert not torch.equal(a, b) and torch.equal(a, c)              # fresh per epoch, reproducible
    v1, v2 = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert torch.equal(v1[T.POS_EPS], v2[T.POS_EPS])                 # one fixed evaluation draw
    plain = next(iter(clean.val_dataloader()))                      # the same data without the transform
    assert T.POS_EPS not in plain and not torch.allclose(plain.pos, v1.pos)


def test_unlabelled_corpus_refused_for_supervised_training(corpus_dir):
    with pytest.raises(InputError, match="unlabelled"):
        _dm(corpus_dir, labelled=True)


def test_edges_follow_the_corrupted_coordinates(corpus_dir):
    from farfield.graphs import parse_edge_spec
    dm, _ = _dm(corpus_dir)
    b = next(iter(dm.train_dataloader()))
    ref = parse_edge_spec("radius:10.0")(b.pos, b.batch, b.chain_index)
    as_set = lambda e: set(map(tuple, e.T.tolist()))                 # noqa: E731
    assert as_set(ref.edge_index) == as_set(b.edge_index)
    clean = parse_edge_spec("radius:10.0")(b.backbone[:, 1] - 0.1 * b.pt_pos_eps, b.batch, b.chain_index)
    assert as_set(clean.edge_index) != as_set(b.edge_index)


# -- every task with every kind of backbone and a long-range module --------------------------------------------------
@pytest.mark.parametrize("long_range", ["none", "virtual_node"])
@pytest.mark.parametrize("backbone,opts", [("schnet", {"hidden": 16, "num_layers": 2}),
                                           ("gvp", {"node_dims": (16, 4), "edge_dims": (8, 1), "num_layers": 2}),
                                           ("egnn", {"hidden": 16, "num_layers": 2}),
                                           ("painn", {"hidden": 16, "num_layers": 2})])
def test_every_task_trains_on_every_backbone(corpus_dir, af_dir, backbone, opts, long_range):
    from farfield.models.config import ModelConfig
    from farfield.pretrain.module import PretrainModule
    from farfield.train.config import OptimConfig
    groups = [["sequence_structure_denoising", "plddt_prediction"], ["torsional_denoising", "inverse_folding"],
              ["edge_distance_prediction", "sequence_denoising"], ["structure_denoising"]]
    for names in groups:
        tasks = build_tasks(names)
        dm, _ = _dm(af_dir if "plddt_prediction" in names else corpus_dir, names)
        batch = next(iter(dm.train_dataloader()))
        torch.manual_seed(0)
        model = ModelConfig(backbone, {**opts, "cutoff": 12.0}, long_range).build(dm.input_spec)
        out = model(batch)
        mod = PretrainModule(model, tasks, OptimConfig(), vectors=0 if out.v is None else out.v.shape[1])
        total = 0
        for t in tasks:
            loss, metrics = t.loss(mod.heads[t.name], mod(batch), batch)
            assert torch.isfinite(loss), (backbone, long_range, t.name)
            total = total + loss
        total.backward()
        grads = [p.grad for p in mod.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("backbone,opts", [("gvp", {"node_dims": (16, 4), "edge_dims": (8, 1), "num_layers": 2}),
                                           ("schnet", {"hidden": 16, "num_layers": 2})])
def test_structure_head_is_equivariant(corpus_dir, backbone, opts):
    """The noise prediction rotates with the input (vector channels for GVP, the EGNN-style head for SchNet)."""
    from farfield.models.config import ModelConfig
    from farfield.pretrain.module import PretrainModule
    from farfield.symmetry.transforms import random_rotation, transform_batch
    from farfield.train.config import OptimConfig
    dm, _ = _dm(corpus_dir, ["structure_denoising"])
    b = next(iter(dm.val_dataloader()))
    for k in ("pos", "x_s", "x_v", "backbone"):
        if k in b:
            b[k] = b[k].double()
    q = random_rotation(torch.Generator().manual_seed(5), dtype=torch.float64)
    rb = transform_batch(b, q)
    torch.manual_seed(0)
    model = ModelConfig(backbone, {**opts, "cutoff": 12.0}).build(dm.input_spec).double()
    out = model(b)
    task = build_tasks(["structure_denoising"])[0]
    mod = PretrainModule(model, [task], OptimConfig(), vectors=0 if out.v is None else out.v.shape[1]).double()
    head = mod.heads[task.name]
    mod.eval()                                                       # GVP has dropout
    p, rp = head(model(b), b), head(model(rb), rb)
    assert torch.allclose(rp, p @ q.T, atol=1e-9)


# -- farfield pretrain: end to end, resume after a kill, refusals -------------------------------------------------
def _pretrain_cmd(corpus_dir, out, epochs):
    return [sys.executable, "-m", "farfield.cli.main", "pretrain", f"data.path={corpus_dir}", "data.edges=radius:10.0",
            "data.options={split: [0.34, 0.33, 0.33]}", "model.backbone_options={hidden: 8, num_layers: 1}",
            f"optim.epochs={epochs}", f"run.out={out}", "run.progress=false",
            "pretrain.tasks={sequence_structure_denoising: 1.0, plddt_prediction: {weight: 0.5}}"]


def test_pretrain_cli_resumes_after_kill(structures, tmp_path):
    corpus_dir = tmp_path / "small"
    corpus_dir.mkdir()
    for f in ("1l2y.pdb", "1aki.pdb", "2BEG.pdb"):
        shutil.copy(structures / f, corpus_dir / f)
    out = tmp_path / "pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = _pretrain_cmd(corpus_dir, out, 30)
    cmd[-1] = "pretrain.tasks={sequence_structure_denoising: 1.0}"     # the corpus has items without pLDDT
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = out / "checkpoints" / "last.ckpt"
    t0 = time.time()
    while not last.is_file() and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.2)
    assert last.is_file(), proc.communicate()[0].decode()[-2000:]
    proc.send_signal(signal.SIGINT)                                  # after the first epoch's checkpoint
    text = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode != 0, text[-2000:]
    assert "interrupted" in text.lower(), text[-2000:]
    assert not (out / "metrics.json").exists()
    done = torch.load(last, weights_only=True)["epoch"]
    assert done < 30
    res = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    import json
    m = json.loads(res.stdout)
    assert m["epochs"] == 30 and len(list((out / "logs").glob("part*"))) == 2
    assert m["residues_per_sec"] > 0 and m["sec_per_1000_residues"] > 0
    blob = torch.load(out / "backbone.pt", weights_only=True)
    assert blob["featuriser"]["preset"] == "gvp" and blob["model"]["backbone_options"]["cutoff"] == 10.0
    # a different configuration in the same directory is refused, naming the difference
    bad = subprocess.run(_pretrain_cmd(corpus_dir, out, 41), env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "optim.epochs" in bad.stderr


# -- fine-tuning ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, structures_module):
    """A tiny pretrained SchNet (2 epochs) and a labelled folder dataset of the same structures."""
    from farfield.pretrain.run import load_pretrain_config, pretrain
    tmp = tmp_path_factory.mktemp("ft")
    os.environ.setdefault("FARFIELD_CACHE", str(tmp / "cache"))
    corpus = tmp / "corpus"
    corpus.mkdir()
    for f in FILES + ("1dix.pdb", "1orc.pdb", "3o5r.pdb"):
        shutil.copy(structures_module / f, corpus / f)
    cfg = load_pretrain_config(None, [f"data.path={corpus}", "data.edges=radius:10.0",
                                      "data.options={split: [0.5, 0.25, 0.25], progress: false}",
                                      "model.backbone_options={hidden: 16, num_layers: 2}", "optim.epochs=2",
                                      f"run.out={tmp / 'pt'}", "run.progress=false",
                                      "pretrain.tasks={inverse_folding: 1.0}"])
    pretrain(cfg, quiet=True)
    labels = tmp / "labels.csv"
    ids = [f.split(".")[0] for f in FILES + ("1dix.pdb", "1orc.pdb", "3o5r.pdb")]
    labels.write_text("id,score\n" + "".join(f"{i},{k * 0.37 % 1:.3f}\n" for k, i in enumerate(ids)))
    return tmp / "pt", labels, corpus


@pytest.fixture(scope="module")
def structures_module():
    from tests.conftest import data_root, missing_data
    d = data_root() / "structures"
    if not d.is_dir():
        missing_data(f"test data folder {d} is missing (set FARFIELD_TEST_DATA)")   # fails under CI=true
    return d


def _train_cfg(labels, corpus, out, *extra):
    from farfield.train.config import load_config
    return load_config(None, ["data.dataset=folder", f"data.path={labels}", f"data.options={{structures: {corpus}}}",
                              "task.kind=graph_regression", "data.edges=radius:10.0", "data.split=[0.5, 0.25, 0.25]",
                              "model.backbone_options={hidden: 16, num_layers: 2}", "optim.epochs=1",
                              f"run.out={out}", "run.progress=false", *extra])


def test_finetune_loads_the_pretrained_weights(pretrained, tmp_path):
    from farfield.train.data import GraphDataModule
    from farfield.train.run import build_module
    pt, labels, corpus = pretrained
    cfg = _train_cfg(labels, corpus, tmp_path / "ft", f"model.init={pt}")
    dm = GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=0)
    dm.setup()
    module, counts = build_module(cfg, dm)
    blob = torch.load(pt / "backbone.pt", weights_only=True)
    own = module.model.state_dict()
    assert set(own) == set(blob["state_dict"])
    assert all(torch.equal(own[k], v) for k, v in blob["state_dict"].items())
    scratch, _ = build_module(_train_cfg(labels, corpus, tmp_path / "sc"), dm)
    assert not all(torch.equal(scratch.model.state_dict()[k], v) for k, v in blob["state_dict"].items())


def test_finetune_freeze_and_backbone_lr(pretrained, tmp_path):
    from farfield.train.data import GraphDataModule
    from farfield.train.run import build_module, train
    pt, labels, corpus = pretrained
    cfg = _train_cfg(labels, corpus, tmp_path / "fz", f"model.init={pt}", "model.freeze=true")
    res = train(cfg, quiet=True)
    assert res["params"]["total"] == 0 and res["params"]["head"] > 0
    ck = torch.load(tmp_path / "fz" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    blob = torch.load(pt / "backbone.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ck["model." + k], v) for k, v in blob.items())          # unchanged by training
    cfg = _train_cfg(labels, corpus, tmp_path / "lr", f"model.init={pt}", "optim.backbone_lr=1e-5")
    dm = GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=0)
    dm.setup()
    module, _ = build_module(cfg, dm)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [1e-5, cfg.optim.lr]


def test_finetune_refuses_a_mismatched_checkpoint(pretrained, tmp_path):
    from farfield.train.run import train
    pt, labels, corpus = pretrained
    with pytest.raises(ConfigError, match="hidden: pretrained 16, here 32"):
        train(_train_cfg(labels, corpus, tmp_path / "a", f"model.init={pt}",
                         "model.backbone_options={hidden: 32, num_layers: 2}"), quiet=True)
    with pytest.raises(ConfigError, match="preset 'gvp'.*'ca_bb'"):
        train(_train_cfg(labels, corpus, tmp_path / "b", f"model.init={pt}",
                         f"data.options={{structures: {corpus}, preset: ca_bb}}"), quiet=True)
    with pytest.raises(ConfigError, match="backbone: pretrained 'schnet', here 'egnn'"):
        train(_train_cfg(labels, corpus, tmp_path / "c", f"model.init={pt}", "model.backbone=egnn",
                         "model.backbone_options={hidden: 16, num_layers: 2}"), quiet=True)
    with pytest.raises(InputError, match="not found"):
        train(_train_cfg(labels, corpus, tmp_path / "d", f"model.init={tmp_path / 'nothing'}"), quiet=True)
    # a Lightning checkpoint, or a file whose unpickling would run code, is not a pretrained checkpoint
    with pytest.raises(InputError, match="not a pretrained checkpoint"):
        train(_train_cfg(labels, corpus, tmp_path / "e", f"model.init={pt / 'checkpoints' / 'last.ckpt'}"),
              quiet=True)
    evil = tmp_path / "evil.pt"
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    evil.write_bytes(pickle.dumps({"format": Boom()}))
    with pytest.raises(InputError, match="refused"):
        train(_train_cfg(labels, corpus, tmp_path / "f", f"model.init={evil}"), quiet=True)


def test_finetune_with_a_new_long_range_module_loads_the_backbone(pretrained, tmp_path):
    from farfield.train.data import GraphDataModule
    from farfield.train.run import build_module, config_hash
    pt, labels, corpus = pretrained
    cfg = _train_cfg(labels, corpus, tmp_path / "vn", f"model.init={pt}", "model.long_range=virtual_node")
    dm = GraphDataModule(cfg.data, cfg.model.edge_spec(cfg.data.edges), seed=0)
    dm.setup()
    with pytest.warns(UserWarning, match="only the backbone is loaded"):
        module, _ = build_module(cfg, dm)
    blob = torch.load(pt / "backbone.pt", weights_only=True)["state_dict"]
    own = module.model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in blob.items())
    # the run key follows the checkpoint's content: retraining it at the same path gives a new key
    h = config_hash(cfg)
    copy = tmp_path / "pt2"
    shutil.copytree(pt, copy)
    cfg2 = _train_cfg(labels, corpus, tmp_path / "vn", f"model.init={copy}", "model.long_range=virtual_node")
    h2 = config_hash(cfg2)
    b = torch.load(copy / "backbone.pt", weights_only=True)
    b["state_dict"] = {k: v + 1 for k, v in b["state_dict"].items()}
    torch.save(b, copy / "backbone.pt")
    assert config_hash(cfg2) != h2 and h != h2       # path and content both count


def test_evidence_data_script(data_dir, tmp_path):
    """examples/pretraining/make_data.py: TS50 chains written as PDB read back to their coordinates; RSA labels of
    every residue of every downstream structure, in range, and the corpus shares no protein with them."""
    import importlib.util
    import json

    from farfield.io.readers import read_structure
    from farfield.io.residues import ResidueView
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "examples" / "pretraining" / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    chain = json.loads((data_dir / "proteins_backbone" / "ts50.json").read_text())[0]
    p = tmp_path / "c.pdb"
    mod.write_backbone_pdb(p, chain["name"], chain["seq"], chain["coords"])
    rv = ResidueView.from_structure(read_structure(p))
    want = np.asarray(chain["coords"], dtype=float)
    assert len(rv) == len(chain["seq"]) and np.allclose(rv.backbone, want, atol=1e-3)
    rows = mod.rsa_rows(data_dir / "structures" / "1aki.pdb")
    rsa = np.array([r[3] for r in rows])
    assert len(rows) == 129 and (rsa >= 0).all() and (rsa <= 1.5).all()
    assert 0.15 < rsa.mean() < 0.45                                  # a folded protein: mostly buried
    names = {json.loads((data_dir / "proteins_backbone" / "ts50.json").read_text())[k]["name"][:4].lower()
             for k in range(50)}
    assert not names & {f.split(".")[0].lower() for f in mod.DOWNSTREAM}


def test_a_start_that_fails_on_its_input_leaves_no_run_behind(tmp_path):
    """A bad data path fails before the run directory records a config, so fixing the path and re-running in the
    same directory is not refused as 'a run of a different configuration' (train and pretrain)."""
    from farfield.pretrain.run import load_pretrain_config, pretrain
    from farfield.train.config import load_config
    from farfield.train.run import train
    with pytest.raises(InputError, match="not found"):
        pretrain(load_pretrain_config(None, [f"data.path={tmp_path / 'missing'}", f"run.out={tmp_path / 'pt'}"]))
    assert not (tmp_path / "pt" / "config.yaml").exists()
    with pytest.raises(InputError):
        train(load_config(None, ["data.dataset=folder", f"data.path={tmp_path / 'missing.csv'}",
                                 f"run.out={tmp_path / 'tr'}"]), quiet=True)
    assert not (tmp_path / "tr" / "config.yaml").exists()
