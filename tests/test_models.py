"""Backbones: every one passes its claimed symmetries (float64 and float32), is batch independent, trains
(finite gradients), and the check catches models that break a claim."""
from __future__ import annotations

import warnings

import pytest
import torch

from farfield.errors import ConfigError, InputError
from farfield.models import (BACKBONES, EGNN, GVPGNN, MPNN, TFN, Backbone, BackboneOutput, InputSpec, SchNet,
                             ScalarReadout, VectorReadout, build_backbone, pool)
from farfield.symmetry import FrameAveraging, FrameDegeneracyWarning, check_symmetry, random_rotation
from tests._graphs import example_batch

SMALL = {"hidden": 16, "num_layers": 2}
GEOMETRIC = [n for n in BACKBONES if n not in ("gcn", "gine", "gatedgcn")]


def small(name, spec, **kw):
    opts = {**SMALL, **kw}
    if name not in ("gcn", "gine", "gatedgcn"):
        opts.setdefault("cutoff", 30.0)
    torch.manual_seed(0)
    return build_backbone(name, spec, **opts)


def _check(model, batch, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameDegeneracyWarning)
        return check_symmetry(model, batch, dtype=dtype)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_passes_its_symmetry_check_float64(name):
    batch = example_batch("residue")
    report = _check(small(name, InputSpec.from_data(batch)), batch, torch.float64)
    assert report.ok, [r.to_dict() for r in report.failures()]
    claimed = {r.test for r in report.results if r.claimed}
    assert {"permutation", "batching"} <= claimed
    for r in report.results:
        if r.claimed:
            assert r.error <= 1e-9 * max(1.0, r.scale)


@pytest.mark.parametrize("name", ["schnet", "egnn", "gvp", "painn", "tfn", "segnn", "fa_mpnn", "gine"])
def test_backbones_pass_in_float32_and_at_atom_level(name):
    batch = example_batch("atom", "float32")
    report = _check(small(name, InputSpec.from_data(batch), cutoff=4.5) if name != "gine" else
                    small(name, InputSpec.from_data(batch)), batch, torch.float32)
    assert report.ok, [r.to_dict() for r in report.failures()]


def test_egnn_coordinate_updates_are_equivariant_and_returned():
    batch = example_batch("residue")
    model = small("egnn", InputSpec.from_data(batch), update_coords=True)
    report = _check(model, batch, torch.float64)
    assert report.ok
    assert any(r.output == "pos" for r in report.results)
    out = model.double()(batch)
    assert out.pos is not None and not torch.allclose(out.pos, batch.pos)


@pytest.mark.parametrize("max_l", [1, 3, 5])
def test_tfn_runs_up_to_degree_five_on_cpu(max_l):
    batch = example_batch("residue")
    model = TFN(InputSpec.from_data(batch), channels=2, max_l=max_l, num_layers=1, cutoff=30.0)
    report = _check(model, batch, torch.float64)
    assert report.ok
    assert model.irreps_t is None or model.irreps_t.lmax == max_l


def test_parity_free_models_see_chirality_and_say_so():
    batch = example_batch("residue")   # a peptide is chiral
    for name in ("tfn_se3", "fa_mpnn_so3"):
        report = _check(small(name, InputSpec.from_data(batch)), batch, torch.float64)
        assert report.group == "SE(3)" and report.ok
        assert max(r.error for r in report.results if r.test == "reflection" and r.output == "s") > 1e-6


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbones_train(name):
    batch = example_batch("residue", "float32")
    model = small(name, InputSpec.from_data(batch))
    model.train()
    out = model(batch)
    loss = pool(out.s, batch.batch, "mean").pow(2).mean()
    if out.v is not None:
        loss = loss + out.v.pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


class _LyingMPNN(MPNN):
    symmetry = "E(3)"          # claims invariance it does not have


class _Positional(SchNet):
    """Breaks permutation equivariance: adds each node's position in the batch."""

    def output(self, state, batch):
        idx = torch.arange(state.s.shape[0], dtype=state.s.dtype).unsqueeze(-1)
        return BackboneOutput(s=state.s + idx)


class _BatchLeak(SchNet):
    """Breaks batch independence: mixes in the mean over the whole batch."""

    def output(self, state, batch):
        return BackboneOutput(s=state.s + state.s.mean(0, keepdim=True))


@pytest.mark.parametrize("cls,test", [(_LyingMPNN, "rotation"), (_Positional, "permutation"), (_BatchLeak, "batching")])
def test_the_check_catches_broken_models(cls, test):
    batch = example_batch("residue")
    torch.manual_seed(0)
    report = check_symmetry(cls(InputSpec.from_data(batch), hidden=8, num_layers=1, cutoff=30.0), batch)
    assert not report.ok
    assert test in {r.test for r in report.failures()}


def test_check_rejects_unknown_groups_and_tests():
    batch = example_batch("residue")
    m = small("schnet", InputSpec.from_data(batch))
    with pytest.raises(ConfigError, match="group"):
        check_symmetry(m, batch, group="Lorentz")
    with pytest.raises(ConfigError, match="tests"):
        check_symmetry(m, batch, tests=("shear",))


def test_frame_averaging_wraps_any_backbone():
    batch = example_batch("residue")
    spec = InputSpec.from_data(batch)
    for inner in (SchNet(spec, hidden=8, num_layers=1, cutoff=30.0),
                  GVPGNN(spec, node_dims=(8, 2), num_layers=1, cutoff=30.0)):
        for group, claim in (("O(3)", "E(3)"), ("SO(3)", "SE(3)")):
            fa = FrameAveraging(inner, group=group)
            assert fa.symmetry == claim
            assert _check(fa, batch, torch.float64).ok


def test_stochastic_frame_averaging_samples_in_training_and_averages_in_eval():
    batch = example_batch("residue")
    spec = InputSpec.from_data(batch)
    torch.manual_seed(0)
    inner = MPNN(spec, hidden=8, num_layers=1, cutoff=30.0).double()
    sfa, fa = FrameAveraging(inner, stochastic=True), FrameAveraging(inner)
    sfa.train()
    outs = [sfa(batch).s for _ in range(6)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    sfa.eval()
    assert torch.allclose(sfa(batch).s, fa(batch).s)


def test_frame_averaging_warns_on_degenerate_frames():
    from farfield.expressivity import star_pair
    from torch_geometric.data import Batch
    g = Batch.from_data_list([star_pair(4)[0]])
    fa = FrameAveraging(MPNN(InputSpec(1), hidden=8, num_layers=1, cutoff=3.0)).double()
    with pytest.warns(FrameDegeneracyWarning, match="within"):
        fa(g)


def test_readouts():
    s = torch.randn(7, 4, dtype=torch.float64)
    b = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    for red in ("sum", "mean", "max"):
        got = ScalarReadout(red)(s, b)
        want = torch.stack([getattr(s[b == i], red)(0) if red != "max" else s[b == i].max(0).values for i in range(3)])
        assert torch.allclose(got, want)
    v = torch.randn(7, 3, 3, dtype=torch.float64)
    ro = VectorReadout(4, 3, 2).double()
    Q = random_rotation(torch.Generator().manual_seed(0))
    assert torch.allclose(ro(s, v @ Q.T, b), ro(s, v, b) @ Q.T, atol=1e-12)
    with pytest.raises(ConfigError, match="equivariant"):
        VectorReadout(4, 3, 2, reduce="max")


def test_build_backbone_errors_and_generic_options():
    spec = InputSpec(5)
    with pytest.raises(ConfigError, match="unknown model"):
        build_backbone("transformer9000", spec)
    with pytest.raises(ConfigError, match="no option"):
        build_backbone("schnet", spec, widht=3)
    assert build_backbone("gvp", spec, hidden=64).hidden_s == 64
    assert build_backbone("tfn", spec, hidden=64, max_l=1).hidden_s == 8
    assert isinstance(build_backbone("fa_mpnn", spec), Backbone)


def test_wrong_inputs_are_named():
    batch = example_batch("residue")
    with pytest.raises(InputError, match="x_s of width"):
        SchNet(InputSpec(3), hidden=8, num_layers=1, cutoff=30.0)(batch)
    with pytest.raises(InputError, match="float64 but SchNet is float32"):
        SchNet(InputSpec.from_data(batch), hidden=8, num_layers=1, cutoff=30.0)(batch)


def test_edges_beyond_the_cutoff_are_never_silently_dropped():
    batch = example_batch("residue")
    model = SchNet(InputSpec.from_data(batch), hidden=8, num_layers=1, cutoff=3.0).double()
    with pytest.raises(ConfigError, match="exceed the cutoff"):
        model(batch)


def test_schnet_cosine_cutoff_is_zero_beyond_cutoff():
    from farfield.features import CosineEnvelope, GaussianRBF
    batch = example_batch("residue")
    spec = InputSpec.from_data(batch)
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="has no envelope"):
        SchNet(spec, hidden=8, num_layers=1, cutoff=6.0, radial=GaussianRBF(6.0, 8, beyond="clamp"))
    m = SchNet(spec, hidden=8, num_layers=1, cutoff=6.0,
               radial=GaussianRBF(6.0, 8, envelope=CosineEnvelope(6.0), beyond="zero")).double()
    d = (batch.pos[batch.edge_index[0]] - batch.pos[batch.edge_index[1]]).norm(dim=-1)
    assert (d > 6.0).any()
    # removing the edges beyond the cutoff must not change anything: their filters are exactly zero
    keep = d <= 6.0
    short = batch.clone()
    short.edge_index = batch.edge_index[:, keep]
    assert torch.allclose(m(batch).s, m(short).s, atol=1e-12)


def test_egnn_without_radial_basis_uses_squared_distances_only():
    batch = example_batch("residue")
    m = EGNN(InputSpec.from_data(batch), hidden=8, num_layers=1, radial=False)
    assert m.radial is None
    assert m.double()(batch).s.shape == (batch.num_nodes, 8)


# --- two-range radial features: local edges as in the plain local model, long edges their own basis ---
def _two_range_batch():
    from torch_geometric.data import Batch

    from farfield.data import Featuriser, FeaturiserConfig
    from farfield.io import example_path, read_structure
    s = read_structure(example_path())
    parts = [s.select(s.res_seq <= 3), s.select((s.res_seq > 3) & (s.res_seq <= 5))]
    feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:4.5+random:4", dtype="float64"))
    return Batch.from_data_list([feat(p) for p in parts])


@pytest.mark.parametrize("name", ["schnet", "painn", "tfn"])
def test_two_range_local_edges_keep_the_local_features(name):
    from farfield.models import edge_geometry, two_range_options
    batch = _two_range_batch()
    local = batch.edge_type == 0
    assert local.any() and (~local).any()
    d = (batch.pos[batch.edge_index[0]] - batch.pos[batch.edge_index[1]]).norm(dim=-1)
    spec = InputSpec.from_data(batch)
    opts = two_range_options(name, 4.5, float(d.max()), hidden=16, num_layers=2)
    assert opts["cutoff"] == 4.5 and opts["long_cutoff"] >= float(d.max())
    assert all(isinstance(v, (int, float)) for v in opts.values())        # serialisable options
    torch.manual_seed(0)
    two = build_backbone(name, spec, **opts).double()
    torch.manual_seed(0)
    plain = build_backbone(name, spec, hidden=16, num_layers=2, cutoff=4.5).double()
    short = batch.clone()
    short.edge_index, short.edge_type = batch.edge_index[:, local], batch.edge_type[local]
    g2, g1 = edge_geometry(batch.pos, batch, two.radial), edge_geometry(short.pos, short, plain.radial)
    k = plain.radial.num_basis
    assert g2.rbf.shape[1] == 2 * k
    assert torch.equal(g2.rbf[local, :k], g1.rbf) and torch.equal(g2.weight[local], g1.weight)
    assert (g2.rbf[local, k:] == 0).all() and (g2.rbf[~local, :k] == 0).all()
    assert (g2.weight[~local] > 0).all() and (g2.rbf[~local, k:].abs().sum(-1) > 0).all()
    # without long edges the two-range model is the plain model with wider (zero-fed) filters
    assert two(short).s.shape == plain(short).s.shape
    report = _check(two, batch, torch.float64)
    assert report.ok, [r.to_dict() for r in report.failures()]


def test_two_range_options_for_2d_baselines_and_errors():
    from farfield.models import two_range_options
    assert two_range_options("gcn", 5.0, 40.0, hidden=8, cutoff=5.0) == {"hidden": 8}
    with pytest.raises(ConfigError, match="unknown model"):
        two_range_options("nope", 5.0, 40.0)
    batch = example_batch("residue")
    m = build_backbone("schnet", InputSpec.from_data(batch), **two_range_options("schnet", 30.0, 40.0, hidden=8,
                                                                                   num_layers=1)).double()
    no_types = batch.clone()
    del no_types.edge_type
    with pytest.raises(ConfigError, match="edge_type"):
        m(no_types)


def test_mace_is_not_pretended():
    assert "mace" not in BACKBONES and "tfn_products" in BACKBONES
    with pytest.raises(ConfigError, match="tfn_products"):
        build_backbone("mace", InputSpec(5))


def test_envelope_option_and_radial_without_envelope():
    spec = InputSpec(5)
    assert build_backbone("gvp", spec, envelope="polynomial").radial.envelope is not None
    assert build_backbone("segnn", spec, envelope=None).radial.envelope is None
    with pytest.raises(ConfigError, match="unknown envelope"):
        build_backbone("mpnn", spec, envelope="gauss")
