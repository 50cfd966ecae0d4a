"""Canonicalisation (farfield.symmetry.canonical): Gram-Schmidt frames, SignNet sign invariance, every canonicaliser x
backbone combination held to its claim in float64, degenerate shapes reported apart, approximate claims measured,
frozen ("untrained") canonicalisers, the config key and the study diagnostics' rotation error."""
from __future__ import annotations

import itertools
import json
import warnings

import pytest
import torch
from torch_geometric.data import Batch

from farfield.data import Featuriser, FeaturiserConfig
from farfield.errors import ConfigError
from farfield.io import example_path, read_structure
from farfield.io.example import SYMMETRIC_SHAPES, symmetric_structure
from farfield.models import InputSpec, build_backbone
from farfield.models.config import ModelConfig, parameter_counts
from farfield.symmetry import FrameDegeneracyWarning, check_symmetry, random_rotation, reflection
from farfield.symmetry.canonical import (CANONICALISERS, Canonicalised, PCASignFrame, SignNetFrame, gram_schmidt,
                                         wrap_canonicaliser)

GEN = torch.Generator().manual_seed(0)


def _rot(det=1.0):
    Q = random_rotation(GEN, torch.float64)
    return Q if det > 0 else reflection(GEN, torch.float64)


@pytest.fixture(scope="module")
def batch():
    feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:4.5", dtype="float64"))
    s = read_structure(example_path())
    half = s.select(s.residue_index() < 3)
    items = [s, half] + [symmetric_structure(n) for n in SYMMETRIC_SHAPES]
    return Batch.from_data_list([feat(x) for x in items])


def _model(name, backbone, spec, **kw):
    torch.manual_seed(0)
    opts = {"cutoff": 6.0} if name == "learned" else {}
    opts.update(kw)
    bb = build_backbone(backbone, spec, hidden=16, num_layers=2, cutoff=6.0)
    return wrap_canonicaliser(name, bb, spec, **opts).double()


# -- Gram-Schmidt -----------------------------------------------------------------------------------------------
def test_gram_schmidt_orthonormal_det_plus_one_and_equivariant():
    V = torch.randn(16, 2, 3, dtype=torch.float64, generator=GEN)
    R, bad = gram_schmidt(V, "SO(3)")
    eye = torch.eye(3, dtype=torch.float64).expand(16, 3, 3)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16, dtype=torch.float64), atol=1e-12)
    assert not bad.any()
    Q = _rot()
    R2, _ = gram_schmidt(V @ Q.T, "SO(3)")
    assert torch.allclose(R2, Q @ R, atol=1e-12)
    # SO(3) frames do not follow a reflection (the cross product is a pseudovector); O(3) frames do
    P = _rot(-1)
    assert not torch.allclose(gram_schmidt(V @ P.T, "SO(3)")[0], P @ R, atol=1e-3)
    V3 = torch.randn(16, 3, 3, dtype=torch.float64, generator=GEN)
    R3, _ = gram_schmidt(V3, "O(3)")
    assert torch.allclose(R3.transpose(-1, -2) @ R3, eye, atol=1e-12)
    assert torch.allclose(gram_schmidt(V3 @ P.T, "O(3)")[0], P @ R3, atol=1e-12)


def test_gram_schmidt_reports_degenerate_vectors():
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    parallel = torch.stack([v, 2 * v + 1e-9], dim=1)                       # [1, 2, 3]
    zero = torch.zeros(1, 2, 3, dtype=torch.float64) + 1e-17
    good = torch.randn(1, 2, 3, dtype=torch.float64, generator=GEN)
    _, bad = gram_schmidt(torch.cat([parallel, zero, good]), "SO(3)", ref=torch.ones(3, dtype=torch.float64))
    assert bad.tolist() == [True, True, False]
    with pytest.raises(ConfigError, match="group"):
        gram_schmidt(good, "SE(3)")
    with pytest.raises(ConfigError, match="vectors must be"):
        gram_schmidt(good, "O(3)")


# -- SignNet --------------------------------------------------------------------------------------------------------
def test_signnet_is_invariant_to_every_sign_flip_of_the_eigenvectors_but_not_exactly_rotation_invariant(batch):
    torch.manual_seed(1)
    net = SignNetFrame(hidden=16).double()
    U = torch.linalg.qr(torch.randn(5, 3, 3, dtype=torch.float64, generator=GEN))[0]
    w = net.sign_invariant(U)
    for signs in itertools.product([1.0, -1.0], repeat=3):
        S = torch.tensor(signs, dtype=torch.float64)
        assert torch.equal(net.sign_invariant(U * S), w) or torch.allclose(net.sign_invariant(U * S), w, atol=1e-15)
    # phi reads the world coordinates of the eigenvectors: the frame does not rotate with the input
    Q = _rot()
    assert (net.sign_invariant(Q @ U) - w @ Q.T).abs().max() > 1e-3
    m = _model("signnet", "mpnn", InputSpec.from_data(batch))
    assert m.symmetry == "T(3)" and m.approximate == "SE(3)" and not m.canonicaliser.exact


# -- every canonicaliser x backbone, held to its claim -----------------------------------------------------------
BACKBONES = ["mpnn", "egnn", "tfn"]      # unconstrained, Cartesian, spherical; `farfield check --canonicaliser all` covers all


@pytest.mark.parametrize("name", list(CANONICALISERS))
@pytest.mark.parametrize("backbone", BACKBONES)
def test_canonicaliser_backbone_combinations_pass_their_claim(batch, name, backbone):
    m = _model(name, backbone, InputSpec.from_data(batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameDegeneracyWarning)
        r = check_symmetry(m, batch, name=f"{backbone}[{name}]", n_approx=3)
    assert r.ok, [f.to_dict() for f in r.failures()]
    if getattr(m, "approximate", None):
        assert "rotation" in r.approximate and r.approximate["rotation"]["transformations"] == 3
    else:
        assert any(x.test == "rotation" and x.claimed for x in r.results)
    # the symmetric shapes are reported apart, not failed
    assert any(x.test.endswith("(degenerate frames)") and not x.claimed for x in r.results)
    # ... and the real peptide is not among them
    assert not m.degenerate_graphs(batch)[0]


def test_mpnn_with_signnet_has_a_measured_nonzero_rotation_error(batch):
    m = _model("signnet", "mpnn", InputSpec.from_data(batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameDegeneracyWarning)
        r = check_symmetry(m, batch, n_approx=4)
    a = r.approximate["rotation"]
    assert r.ok and 1e-6 < a["mean"] <= a["max"] and len(a["mean_per_transformation"]) == 4
    assert "approximate" in r.notes["rotation"]
    assert json.loads(json.dumps(r.to_dict()))["approximate"]["rotation"]["max"] == a["max"]


def test_plain_mpnn_is_not_rotation_invariant_but_canonicalised_is(batch):
    spec = InputSpec.from_data(batch)
    torch.manual_seed(0)
    plain = build_backbone("mpnn", spec, hidden=16, num_layers=2, cutoff=6.0).double().eval()
    Q = _rot()
    from farfield.symmetry import transform_batch
    assert (plain(transform_batch(batch, Q)).s - plain(batch).s).abs().max() > 1e-3
    for name in ("vn_pointnet", "vn_dgcnn", "learned", "pca_sign"):
        m = _model(name, "mpnn", spec).eval()
        keep = ~m.degenerate_graphs(batch)[batch.batch]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FrameDegeneracyWarning)
            d = (m(transform_batch(batch, Q)).s - m(batch).s).abs()[keep]
        assert d.max() < 1e-10, name


def test_pca_sign_o3_is_reflection_invariant(batch):
    spec = InputSpec.from_data(batch)
    m = _model("pca_sign", "mpnn", spec, group="O(3)")
    assert m.symmetry == "E(3)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameDegeneracyWarning)
        r = check_symmetry(m, batch)
    assert r.ok and any(x.test == "reflection" and x.claimed and x.error < 1e-9 for x in r.results)
    assert isinstance(m.canonicaliser, PCASignFrame)


def test_degenerate_frames_warn_once_at_run_time(batch):
    m = _model("vn_pointnet", "mpnn", InputSpec.from_data(batch))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m(batch)
        m(batch)
    msgs = [x for x in w if issubclass(x.category, FrameDegeneracyWarning)]
    assert len(msgs) == 1 and "ill-defined frame" in str(msgs[0].message)
    assert m.degenerate_graphs(batch)[2:].all()        # the symmetric shapes


# -- trained / untrained ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["signnet", "vn_pointnet", "vn_dgcnn", "learned"])
def test_trained_canonicalisers_get_gradients_untrained_stay_frozen(batch, name):
    spec = InputSpec.from_data(batch)
    for trainable in (True, False):
        m = _model(name, "mpnn", spec, trainable=trainable)
        m.train()
        before = {k: v.clone() for k, v in m.canonicaliser.state_dict().items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FrameDegeneracyWarning)
            m(batch).s.pow(2).sum().backward()
        grads = [p.grad for p in m.canonicaliser.parameters()]
        counts = parameter_counts(m)
        if trainable:
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
            assert counts["canonicaliser"] > 0
            assert counts["total"] == counts["backbone"] + counts["canonicaliser"]
        else:
            assert all(g is None for g in grads) and counts["canonicaliser"] == 0
            assert not m.canonicaliser.training                      # batch norm statistics do not move
            after = m.canonicaliser.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before)


# -- configuration ------------------------------------------------------------------------------------------------
def test_model_config_builds_canonicalised_models_and_validates(batch):
    spec = InputSpec.from_data(batch)
    cfg = ModelConfig("mpnn", {"hidden": 16, "num_layers": 2, "cutoff": 6.0}, canonicaliser="learned",
                      canonicaliser_options={"hidden": 8})
    m = cfg.build(spec)
    assert isinstance(m, Canonicalised) and m.canonicaliser.network.radial.cutoff == 6.0
    assert ModelConfig.from_dict({"backbone": "mpnn", "canonicaliser": "sfa"}).build(spec).stochastic
    with pytest.raises(ConfigError, match="unknown model.canonicaliser 'bogus'.*vn_pointnet"):
        ModelConfig("mpnn", canonicaliser="bogus")
    with pytest.raises(ConfigError, match="canonicaliser 'vn_pointnet': bad options"):
        ModelConfig("mpnn", canonicaliser="vn_pointnet", canonicaliser_options={"nope": 1}).build(spec)
    with pytest.raises(ConfigError, match="needs a 3D backbone"):
        wrap_canonicaliser("vn_pointnet", build_backbone("gcn", spec), spec)
    with pytest.raises(ConfigError, match="without a canonicaliser"):
        wrap_canonicaliser("none", build_backbone("mpnn", spec), spec, trainable=False)


def test_run_key_of_configs_without_a_canonicaliser_is_unchanged():
    from farfield.train.config import TrainConfig
    from farfield.train.run import config_key
    key = config_key(TrainConfig())
    assert "canonicaliser" not in key["model"] and "canonicaliser_options" not in key["model"]
    other = config_key(TrainConfig.from_dict({"model": {"backbone": "mpnn", "canonicaliser": "vn_pointnet"}}))
    assert other["model"]["canonicaliser"] == "vn_pointnet"


# -- study diagnostics: rotation error of trained predictions ----------------------------------------------------------
def test_rotation_error_of_task_modules(batch):
    from farfield.study.diagnostics import rotation_error
    from farfield.train.config import TaskConfig
    from farfield.train.module import TaskModule
    spec = InputSpec.from_data(batch)
    task = TaskConfig(kind="node_regression", num_outputs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = TaskModule(_model("vn_pointnet", "mpnn", spec), task, None).double().eval()
        torch.manual_seed(0)
        plain = TaskModule(build_backbone("mpnn", spec, hidden=16, num_layers=2, cutoff=6.0), task, None).double().eval()
        e = rotation_error(exact, batch, rotations=3)
        p = rotation_error(plain, batch, rotations=3)
    assert e["rotation_error_max_regular"] < 1e-10 and e["rotation_degenerate_graphs"] == len(SYMMETRIC_SHAPES)
    assert e["rotation_error_max"] > 1e-6                  # the symmetric shapes' frames are not stable
    assert p["rotation_error_mean"] > 1e-3 and p["rotation_degenerate_graphs"] == 0
    assert p["rotation_error_mean"] == p["rotation_error_mean_regular"]


def test_cli_check_with_canonicalisers(capsys):
    from farfield.cli.main import main
    rc = main(["check", "--model", "mpnn", "--canonicaliser", "signnet,vn_pointnet", "--level", "atom", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["canonicalisers"] == ["signnet", "vn_pointnet"]
    by = {m["model"]: m for m in out["models"]}
    assert by["mpnn[signnet]"]["approximate"]["rotation"]["mean"] > 1e-6
    assert by["mpnn[vn_pointnet]"]["group"] == "SE(3)" and not by["mpnn[vn_pointnet]"]["approximate"]
    assert main(["check", "--model", "mpnn", "--canonicaliser", "bogus"]) != 0
    assert "unknown canonicaliser 'bogus'" in capsys.readouterr().err


def test_canonicaliser_around_a_frame_averaged_backbone_sets_apart_the_inner_frames_degenerate_graphs(capsys):
    # the learned frame is well defined on the symmetric shapes (their residue features break the symmetry) while
    # the inner frame averaging's covariance is degenerate there: both wrappers' degenerate graphs are set apart
    from farfield.cli.main import main
    rc = main(["check", "--model", "fa_mpnn", "--canonicaliser", "learned", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["models"][0]["ok"], out["models"][0]


# -- QM9 sample: training end to end (smoke) ---------------------------------------------------------------------
@pytest.mark.parametrize("canon,pooling", [("vn_pointnet", "sum"), ("learned", "gigp"), ("signnet", "mean")])
def test_training_with_a_canonicaliser_on_the_qm9_sample(tmp_path, canon, pooling):
    from conftest import data_root, missing_data

    from farfield.diagnostics.influence import load_trained
    from farfield.study.diagnostics import rotation_error
    from farfield.train.config import load_config
    from farfield.train.run import train
    db = data_root() / "qm9" / "schnetpack_test_qm9.db"
    if not db.is_file():
        missing_data(f"the QM9 sample {db} is missing (set FARFIELD_TEST_DATA)")
    cfg = load_config(None, ["data.dataset=qm9", f"data.path={db}", "data.target=U0", "model.backbone=mpnn",
                             "model.backbone_options={hidden: 16, num_layers: 2}", f"model.canonicaliser={canon}",
                             f"task.pooling={pooling}", "optim.epochs=2", "data.batch_size=4",
                             f"run.out={tmp_path / 'run'}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train(cfg, quiet=True)
        assert res["params"]["canonicaliser"] > 0 and res["pooling"] == pooling
        assert res["params"]["head"] > (600 if pooling == "gigp" else 0)        # GIGP: its orbit network
        assert torch.isfinite(torch.tensor(res["test/mae"]))
        module, _, dm = load_trained(tmp_path / "run", with_data=True)
        # every graph of the sample: most of its tiny heavy-atom graphs (1-4 atoms) have ill-defined frames
        b = Batch.from_data_list(list(dm.train) + list(dm.val) + list(dm.test))
        err = rotation_error(module.double().eval(), b, rotations=2)
    assert 0 < err["rotation_degenerate_graphs"] < b.num_graphs
    if canon == "signnet":
        assert err["rotation_error_mean_regular"] > 1e-8          # approximate, and measured as such
    else:
        assert err["rotation_error_max_regular"] < 1e-9


def test_study_report_shows_rotation_error_and_canonicaliser_parameters():
    from farfield.study.report import _canon_cell, diagnostics_section
    arm = {"backbone": "mpnn", "arm": "signnet", "runs": [{"reference_cutoff": 5.0, "layers": 3}], "errors": [],
           "range_angstrom": 4.0, "range_hops": 1.2, "beyond_cutoff": 0.1, "beyond_L_cutoffs": 0.01, "mad": 0.5,
           "rotation_error_mean": 2e-2, "rotation_error_max": 3e-1, "rotation_degenerate_share": 0.25,
           "rotation_error_mean_regular": 1e-2, "rotation_error_max_regular": 2e-1}
    exact = {**arm, "arm": "fa", "rotation_error_mean": 1e-15, "rotation_error_max": 4e-15,
             "rotation_error_mean_regular": 1e-15, "rotation_error_max_regular": 4e-15}
    summary = {"metric": "test/mae", "groups": [{"backbone": "mpnn", "arm": "signnet", "mean": 9.5},
                                               {"backbone": "mpnn", "arm": "fa", "mean": 9.0}],
               "diagnostics": {"arms": [arm, exact], "graphs": 4, "seeds": 1, "reference_edges": "radius:5.0"}}
    text = "\n".join(diagnostics_section(summary))
    assert "| MAD | rotation error mean / max | ill-defined frames | error on well-defined frames |" in text
    header = next(line for line in text.splitlines() if line.startswith("| backbone + arm"))
    rule = next(line for line in text.splitlines() if line.startswith("|---"))
    assert header.count("|") == rule.count("|")
    assert "| 2.0e-02 / 3.0e-01 | 25% | 1.0e-02 / 2.0e-01 |" in text and "1.0e-15 / 4.0e-15" in text
    no_rot = {**summary, "diagnostics": {**summary["diagnostics"], "arms": [
        {k: v for k, v in arm.items() if not k.startswith("rotation")}]}}
    assert "rotation error" not in "\n".join(diagnostics_section(no_rot))
    assert _canon_cell({"canonicaliser_params": 1234}) == " (canon. 1,234)" and _canon_cell({}) == ""


def test_study_table_names_the_task_heads_parameters_where_arms_differ_in_them():
    from farfield.study.report import format_table
    base = {"backbone": "schnet", "n": 2, "std": 1.0, "params": 14432, "sec_per_epoch": 1.0, "cpu_sec_per_epoch": 1.0,
            "converged": 2, "assessable": 2}
    groups = [{**base, "arm": "none", "mean": 29.4, "head_params": 1089},
              {**base, "arm": "gigp", "mean": 36.3, "head_params": 1698}]
    text = format_table({"metric": "test/mae", "groups": groups})
    assert "| 14,432 + head 1,698 |" in text and "| 14,432 + head 1,089 |" in text
    same = format_table({"metric": "test/mae", "groups": [groups[0], {**groups[1], "head_params": 1089}]})
    assert "head" not in same.split("\n", 1)[1]
