"""Latent charges (``latent_charges``): the potential against float64 brute force (aperiodic and periodic),
torch-pme's Ewald and PME against each other, periodic graphs through every backbone (cell-consistent rigid
motions and lattice translations in the symmetry check), the energy readout, and the errors."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from _ewald_reference import reference_direct_potential, reference_periodic_potential
from farfield.data import Featuriser, FeaturiserConfig
from farfield.errors import ConfigError, InputError
from farfield.io import read_xyz
from farfield.io.structure import Structure
from farfield.models import BACKBONES, InputSpec, build_backbone
from farfield.models.base import BackboneOutput, LayerHooks, edge_geometry
from farfield.models.long_range import LatentCharges, WithLongRange, build_strategy
from farfield.models.long_range import latent_charges as lc
from farfield.symmetry import FrameAveraging, check_symmetry

SPHERICAL = tuple(n for n in BACKBONES if n.startswith("tfn") or n == "segnn")
GRAPH2D = ("gcn", "gine", "gatedgcn")
CELLS = {
    "orthorhombic": [[6.0, 0, 0], [0, 6.5, 0], [0, 0, 7.0]],
    "triclinic": [[7.0, 0, 0], [2.0, 6.0, 0], [1.0, 1.5, 6.5]],
    "small": [[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]],        # cutoff beyond half the cell: many images
}


def _charges(n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64)


# -- the kernel and the two exact sums ---------------------------------------------------------------------
def test_screened_coulomb_is_smooth_and_finite_at_zero():
    r = torch.tensor([0.0, 1e-9, 1e-5, 0.5, 3.0, 20.0], dtype=torch.float64, requires_grad=True)
    k = lc.screened_coulomb(r, 1.0)
    assert k[0].item() == pytest.approx(math.sqrt(2 / math.pi), rel=1e-15)
    assert k[1].item() == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)
    assert k[-1].item() == pytest.approx(1 / 20.0, rel=1e-15)         # 1/r far out
    assert k[3].item() == pytest.approx(math.erf(0.5 / math.sqrt(2)) / 0.5, rel=1e-15)
    k.sum().backward()
    assert torch.isfinite(r.grad).all() and abs(r.grad[0].item()) < 1e-12   # even function: zero slope at 0
    # the series branch joins the closed form continuously (value and slope)
    a = torch.tensor([0.99999e-4, 1.00001e-4], dtype=torch.float64)
    ka = lc.screened_coulomb(a, 1.0)
    assert abs(ka[0] - ka[1]).item() < 1e-12


def test_direct_potential_equals_float64_brute_force_and_never_crosses_graphs():
    torch.manual_seed(0)
    pos = torch.randn(40, 3, dtype=torch.float64) * 4
    q = _charges(40, 3)
    batch = torch.tensor([0] * 15 + [1] * 25)
    got = lc.direct_potential(q, pos, batch, 2, sigma=1.3)
    for g, sl in ((0, slice(0, 15)), (1, slice(15, 40))):
        ref = reference_direct_potential(q[sl], pos[sl], 1.3)
        np.testing.assert_allclose(got[sl].numpy(), ref, rtol=1e-13, atol=1e-13)


def test_direct_potential_chunked_path_equals_the_dense_one(monkeypatch):
    torch.manual_seed(1)
    pos = torch.randn(70, 3, dtype=torch.float64) * 5
    q = _charges(70, 2, seed=1)
    batch = torch.tensor([0] * 30 + [1] * 40)
    dense = lc.direct_potential(q, pos, batch, 2, 1.0)
    monkeypatch.setattr(lc, "DENSE_MAX_ATOMS", 10)
    chunked = lc.direct_potential(q, pos, batch, 2, 1.0, chunk=7)
    torch.testing.assert_close(chunked, dense, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("cell", list(CELLS))
def test_ewald_equals_an_independent_float64_ewald_reference(cell):
    c = torch.tensor(CELLS[cell], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    pos = torch.rand(18, 3, generator=g, dtype=torch.float64) @ c - 1.0      # some atoms outside the cell
    q = _charges(18, 2, seed=3)
    ref = reference_periodic_potential(q, pos, c, 1.0)
    # the reference is itself split-independent (two widths of its own Ewald split)
    np.testing.assert_allclose(reference_periodic_potential(q, pos, c, 1.0, sigma2=3.0), ref, atol=1e-12)
    b = torch.zeros(18, dtype=torch.long)
    got = lc.periodic_potential(q, pos, b, c[None], 1.0, "ewald")
    scale = np.abs(ref).max()
    assert np.abs(got.numpy() - ref).max() <= 1e-12 * scale
    pme = lc.periodic_potential(q, pos, b, c[None], 1.0, "pme")
    assert np.abs(pme.numpy() - ref).max() <= 2e-5 * scale                 # PME at its default mesh
    fine = lc.periodic_potential(q, pos, b, c[None], 1.0, "pme", mesh_spacing=1 / 3, interpolation_nodes=6)
    assert np.abs(fine.numpy() - ref).max() <= 5e-7 * scale


def test_periodic_potential_of_a_net_charge_has_a_neutralising_background():
    """A single charge in a cubic cell: the potential it feels from its own images is the Madelung-like
    constant of the screened kernel; it must match the brute force (net charge, background included)."""
    c = torch.eye(3, dtype=torch.float64) * 5.0
    pos = torch.zeros(1, 3, dtype=torch.float64)
    q = torch.ones(1, 1, dtype=torch.float64)
    ref = reference_periodic_potential(q, pos, c, 1.0)
    got = lc.periodic_potential(q, pos, torch.zeros(1, dtype=torch.long), c[None], 1.0, "ewald")
    assert abs(got.item() - ref.item()) < 1e-12
    # the point-charge Madelung constant of a simple cubic lattice (-2.837297 / L) plus the smooth self term
    # difference: erf kernel minus 1/r integrates to the known offset; the sign and magnitude are a sanity check
    assert -2.837297 / 5.0 - 0.5 < got.item() < 0


def test_direct_and_torch_pme_agree_on_a_neutral_molecule_in_a_large_box():
    """The aperiodic direct sum and torch-pme's PME on the molecule placed in a box 5x its extent agree up to the
    images' (dipole) interaction, ~1e-3 relative: a cross-check of the two backends' conventions (the factor 2 of
    torch-pme's potential, the self term, the background)."""
    torch.manual_seed(0)
    pos = torch.randn(30, 3, dtype=torch.float64) * 1.2
    q = _charges(30, 1)
    q = q - q.mean()
    b = torch.zeros(30, dtype=torch.long)
    direct = lc.direct_potential(q, pos, b, 1, 1.0)
    ext = float((pos.max(0).values - pos.min(0).values).max())
    L = 5 * ext
    boxed = lc.periodic_potential(q, pos - pos.mean(0) + L / 2, b, (torch.eye(3, dtype=torch.float64) * L)[None],
                                  1.0, "pme")
    rel = float((boxed - direct).abs().max() / direct.abs().max())
    assert rel < 5e-3
    off = lc.periodic_potential(2 * q, pos - pos.mean(0) + L / 2, b, (torch.eye(3, dtype=torch.float64) * L)[None],
                                1.0, "pme")
    assert float((off - direct).abs().max() / direct.abs().max()) > 0.5     # the check can fail


# -- periodic graphs through the models --------------------------------------------------------------------
def _box(n, cell, seed):
    rng = np.random.default_rng(seed)
    cell = np.asarray(cell, dtype=np.float64)
    pos = rng.random((n, 3)) @ cell
    return Structure.from_arrays(pos, ["Na" if i % 2 else "Cl" for i in range(n)], cell=cell, name=f"box{seed}")


def periodic_batch(dtype="float64", cutoff=4.0):
    feat = Featuriser(FeaturiserConfig(level="atom", edges=f"radius:{cutoff}", dtype=dtype, elements=("Na", "Cl")))
    return Batch.from_data_list([feat(_box(14, CELLS["orthorhombic"], 0)), feat(_box(16, CELLS["triclinic"], 1))])


def test_periodic_edges_reach_across_the_boundary():
    batch = periodic_batch()
    assert batch.cell.shape == (2, 3, 3) and batch.cell_shift.shape == (batch.edge_index.shape[1], 3)
    assert bool((batch.cell_shift != 0).any())
    g = edge_geometry(batch.pos, batch, None)
    assert float(g.dist.max()) <= 4.0 + 1e-9 and float(g.dist.min()) > 0
    # without the lattice offsets, boundary edges would be long
    naive = (batch.pos[batch.edge_index[0]] - batch.pos[batch.edge_index[1]]).norm(dim=-1)
    assert float(naive.max()) > 4.0


@pytest.mark.parametrize("name", [n for n in BACKBONES if n not in GRAPH2D and "fa_" not in n])
def test_every_3d_backbone_with_latent_charges_keeps_its_symmetry_on_periodic_cells(name):
    batch = periodic_batch()
    torch.manual_seed(0)
    size = {"num_layers": 2} if name in SPHERICAL else {"hidden": 32, "num_layers": 2}
    model = build_strategy("latent_charges").wrap(build_backbone(name, InputSpec.from_data(batch), cutoff=4.0, **size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_symmetry(model, batch, dtype=torch.float64, seed=4)
    assert report.ok, report.failures()
    tests = {r.test for r in report.results}
    assert "lattice" in tests and all(r.claimed for r in report.results if r.test == "lattice")


class _Unwrapped(torch.nn.Module):
    """A deliberately wrong periodic model: distances to the graph's first atom without images."""

    symmetry = "E(3)"

    def forward(self, batch):
        first = batch.pos[batch.ptr[:-1]][batch.batch]
        return (batch.pos - first).norm(dim=-1, keepdim=True)


def test_the_lattice_test_catches_a_model_that_ignores_images():
    report = check_symmetry(_Unwrapped(), periodic_batch(), dtype=torch.float64, seed=0)
    assert report.error("rotation") < 1e-12
    assert report.error("lattice") > 1e-3 and not report.ok


def test_pme_backend_is_invariant_to_its_interpolation_accuracy():
    batch = periodic_batch()
    torch.manual_seed(0)
    model = build_strategy("latent_charges", backend="pme").wrap(
        build_backbone("schnet", InputSpec.from_data(batch), hidden=32, num_layers=2, cutoff=4.0))
    report = check_symmetry(model, batch, dtype=torch.float64, seed=5, tolerance=1e-5)
    assert report.ok, report.failures()


def test_periodic_and_aperiodic_misuse_is_refused_with_clear_errors(tmp_path):
    batch = periodic_batch()
    spec = InputSpec.from_data(batch)
    ewald = build_strategy("ewald").wrap(build_backbone("schnet", spec, hidden=16, num_layers=2, cutoff=4.0))
    with pytest.raises(InputError, match="periodic.*ewald"):
        ewald(batch)
    direct = build_strategy("latent_charges", backend="direct").wrap(
        build_backbone("schnet", spec, hidden=16, num_layers=2, cutoff=4.0)).double()
    with pytest.raises(InputError, match="backend='direct'.*periodic"):
        direct(batch)
    fa = FrameAveraging(build_backbone("mpnn", spec, hidden=16, num_layers=2, cutoff=4.0)).double()
    with pytest.raises(InputError, match="periodic.*frame averaging"):
        fa(batch)
    aperiodic = Batch.from_data_list([Featuriser(FeaturiserConfig(level="atom", edges="radius:4", dtype="float64",
                                                                  elements=("Na", "Cl")))(
        Structure.from_arrays(np.random.default_rng(0).random((6, 3)) * 4, ["Na"] * 6, name="m"))])
    pme = build_strategy("latent_charges", backend="pme").wrap(
        build_backbone("schnet", InputSpec.from_data(aperiodic), hidden=16, num_layers=2, cutoff=4.0)).double()
    with pytest.raises(InputError, match="needs a periodic cell"):
        pme(aperiodic)
    with pytest.raises(InputError, match="periodic graphs are built at atom level with a single plain radius"):
        Featuriser(FeaturiserConfig(level="atom", edges="knn:4", elements=("Na", "Cl")))(_box(6, CELLS["small"], 0))
    for bad, match in (({"channels": 0}, "channels"), ({"sigma": -1}, "sigma"), ({"backend": "fmm"}, "backend"),
                       ({"mesh_spacing": 0}, "mesh_spacing")):
        with pytest.raises(ConfigError, match=match):
            build_strategy("latent_charges", **bad).wrap(build_backbone("schnet", spec, hidden=16, num_layers=2,
                                                                       cutoff=4.0))
    with pytest.raises(ConfigError, match="no option"):
        build_strategy("latent_charges", kernel="yukawa")


def test_extended_xyz_cells_are_read_and_partial_periodicity_refused(tmp_path):
    good = tmp_path / "nacl.xyz"
    good.write_text('2\nLattice="5.6 0 0 0 5.6 0 0 0 5.6" pbc="T T T" energy=-1.0\nNa 0 0 0\nCl 2.8 2.8 2.8\n')
    s = read_xyz(good)[0]
    np.testing.assert_allclose(s.cell, np.eye(3) * 5.6)
    data = Featuriser(FeaturiserConfig(level="atom", edges="radius:5", elements=("Na", "Cl")))(s)
    assert data.cell.shape == (1, 3, 3) and data.edge_index.shape[1] > 0
    free = tmp_path / "free.xyz"
    free.write_text('2\nLattice="5.6 0 0 0 5.6 0 0 0 5.6" pbc="F F F"\nNa 0 0 0\nCl 2.8 2.8 2.8\n')
    assert read_xyz(free)[0].cell is None
    slab = tmp_path / "slab.xyz"
    slab.write_text('2\nLattice="5.6 0 0 0 5.6 0 0 0 30" pbc="T T F"\nNa 0 0 0\nCl 2.8 2.8 2.8\n')
    with pytest.raises(InputError, match="only fully periodic"):
        read_xyz(slab)
    flat = tmp_path / "flat.xyz"
    flat.write_text('2\nLattice="5.6 0 0 0 5.6 0 1 1 0"\nNa 0 0 0\nCl 2.8 2.8 2.8\n')
    with pytest.raises(InputError, match="singular"):
        read_xyz(flat)


# -- the mechanism --------------------------------------------------------------------------------------------
def _two_clusters(dtype=torch.float64, gap=30.0):
    s1 = np.random.default_rng(0).random((6, 3)) * 3
    s2 = np.random.default_rng(1).random((5, 3)) * 3 + gap
    feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:5", dtype="float64", elements=("C", "N", "O")))
    return feat(Structure.from_arrays(np.concatenate([s1, s2]), ["C", "N", "O"] * 3 + ["C", "N"], name="two"))


def test_the_far_cluster_changes_the_near_cluster_and_energy_enters_the_prediction():
    data = _two_clusters()
    spec = InputSpec.from_data(data)
    torch.manual_seed(0)
    model = build_strategy("latent_charges", energy=True).wrap(
        build_backbone("schnet", spec, hidden=16, num_layers=2, cutoff=5.0)).double()
    plain = model.backbone
    moved = data.clone()
    moved.pos = moved.pos.clone()
    moved.pos[6:] += torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)   # rigidly move the far cluster
    out, out2 = model(Batch.from_data_list([data])), model(Batch.from_data_list([moved]))
    assert isinstance(out, BackboneOutput) and out.node_energy.shape == (11,)
    assert float((out.s[:6] - out2.s[:6]).abs().max()) > 1e-6                 # the near cluster feels it
    p, p2 = plain(Batch.from_data_list([data])), plain(Batch.from_data_list([moved]))
    assert float((p.s[:6] - p2.s[:6]).abs().max()) == 0.0                      # the backbone alone does not
    # the energy is 1/2 sum_c w_c q_c phi_c of the last layer's charges (placement 'parallel': from its input)
    seen = {}

    class Grab(LayerHooks):
        def before(self, i, state, batch):
            seen[i] = state.s
            return state

    b = Batch.from_data_list([data])
    out = model(b, between=Grab())
    m: LatentCharges = model.long_range
    q = m.blocks[-1].charges(seen[1])
    phi = torch.from_numpy(reference_direct_potential(q.detach(), data.pos, m.sigma))
    torch.testing.assert_close(out.node_energy.detach(), 0.5 * (q.detach() * phi) @ m.energy_weight.detach())


def test_energy_readout_is_checked_for_symmetry_and_every_parameter_gets_a_gradient():
    batch = periodic_batch()
    torch.manual_seed(0)
    model = build_strategy("latent_charges", energy=True, channels=3).wrap(
        build_backbone("painn", InputSpec.from_data(batch), hidden=16, num_layers=2, cutoff=4.0)).double()
    report = check_symmetry(model, batch, dtype=torch.float64, seed=2)
    assert report.ok and any(r.output == "node_energy" for r in report.results)
    out = model(batch)
    (out.s.sum() + out.node_energy.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_energy_readout_adds_the_latent_coulomb_energy_to_graph_regression():
    from farfield.train.config import TaskConfig
    from farfield.train.module import TaskModule as LitModule
    data = _two_clusters()
    data.y = torch.zeros(1, 1, dtype=torch.float64)
    batch = Batch.from_data_list([data, data])
    torch.manual_seed(0)
    model = build_strategy("latent_charges", energy=True).wrap(
        build_backbone("schnet", InputSpec.from_data(data), hidden=16, num_layers=2, cutoff=5.0)).double()
    task = TaskConfig(kind="graph_regression", num_outputs=1, pooling="sum")
    lit = LitModule(model, task, optim=None).double()
    out = model(batch)
    expected = (lit.head(out.s) + out.node_energy.unsqueeze(-1)).reshape(2, -1).sum(1, keepdim=True)
    torch.testing.assert_close(lit(batch), expected)
    with pytest.raises(ConfigError, match="pooling=sum"):
        LitModule(model, TaskConfig(kind="graph_regression", num_outputs=1, pooling="mean"), optim=None)
    with pytest.raises(ConfigError, match="graph_regression"):
        LitModule(model, TaskConfig(kind="node_regression", num_outputs=1), optim=None)


def test_chunked_potential_gradients_equal_autograd_of_the_dense_sum(monkeypatch):
    torch.manual_seed(2)
    pos = (torch.randn(23, 3, dtype=torch.float64) * 2).requires_grad_()
    q = _charges(23, 2, seed=2).requires_grad_()
    batch = torch.zeros(23, dtype=torch.long)
    g = torch.randn(23, 2, dtype=torch.float64)
    dense = lc.direct_potential(q, pos, batch, 1, 0.8)
    dq, dx = torch.autograd.grad((dense * g).sum(), (q, pos))
    monkeypatch.setattr(lc, "DENSE_MAX_ATOMS", 5)
    chunked = lc.direct_potential(q, pos, batch, 1, 0.8, chunk=6)
    cq, cx = torch.autograd.grad((chunked * g).sum(), (q, pos))
    torch.testing.assert_close(chunked, dense, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(cq, dq, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cx, dx, rtol=1e-11, atol=1e-11)
    # and against finite differences, coincident atoms included
    pos2 = pos.detach().clone()
    pos2[5] = pos2[4]
    assert torch.autograd.gradcheck(lambda qq, xx: lc.direct_potential(qq, xx, batch, 1, 0.8, chunk=6),
                                    (q.detach().clone().requires_grad_(), pos2.requires_grad_()))


def test_a_folder_of_periodic_extended_xyz_files_trains_with_latent_charges(tmp_path, capsys):
    import json

    from farfield.cli.main import main
    from farfield.datasets.custom import folder
    from farfield.graphs import parse_edge_spec
    from farfield.io.example import periodic_structure
    rows = ["id,y"]
    for k in range(8):
        s = periodic_structure("rocksalt", seed=k)
        lat = " ".join(f"{v:g}" for v in s.cell.ravel())
        (tmp_path / f"box{k}.xyz").write_text(f"{len(s)}\nLattice=\"{lat}\" pbc=\"T T T\"\n" + "".join(
            f"{e} {x:.6f} {y:.6f} {z:.6f}\n" for e, (x, y, z) in zip(s.element, s.coords)))
        rows.append(f"box{k},{0.1 * k:.2f}")
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    g = folder(csv, structures=str(tmp_path), level="atom")[0]
    assert g.cell.shape == (1, 3, 3)
    parse_edge_spec("radius:4").apply(g)                   # what the data module does with data.edges
    assert g.cell_shift.shape == (g.edge_index.shape[1], 3) and bool((g.cell_shift != 0).any())
    code = main(["train", "data.dataset=folder", f"data.path={csv}", f"data.options.structures={tmp_path}",
                 "data.options.level=atom", "data.edges=radius:4", "model.backbone=schnet",
                 "model.backbone_options={hidden: 16, num_layers: 2}", "model.long_range=latent_charges",
                 "optim.epochs=1", "data.batch_size=4", "run.progress=false", f"run.out={tmp_path / 'run'}", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert math.isfinite(json.loads(captured.out)["test/mae"])
