"""`farfield check` and `farfield expressivity` from the command line."""
from __future__ import annotations

import json

from farfield.cli.main import main


def test_check_one_model_json(capsys):
    assert main(["check", "--model", "gvp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["graphs"] == 6
    assert out["inputs"][2:] == ["hexagon", "octahedron", "star", "chain"]
    assert {r["test"] for r in out["models"][0]["results"]} == {"rotation", "reflection", "translation",
                                                                "permutation", "batching"}


def test_check_table_and_float32(capsys):
    assert main(["check", "--model", "tfn_se3", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "SE(3)" in out


def test_check_on_a_structure_file_at_atom_level(capsys, structures):
    assert main(["check", "--model", "schnet", "--structure", str(structures / "1l2y.pdb"), "--level", "atom",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]


def test_check_long_range_all(capsys):
    from farfield.models.long_range import STRATEGIES
    assert main(["check", "--model", "schnet,painn", "--long-range", "all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    labels = [m["model"] for m in out["models"]]
    assert out["ok"] and out["long_range"] == list(STRATEGIES)
    assert labels[:3] == ["schnet", "schnet+random", "schnet+full"] and "painn+ewald" in labels
    assert len(labels) == 2 * len(STRATEGIES)


def test_check_errors(capsys):
    assert main(["check", "--model", "gvp", "--long-range", "ewlad"]) == 2
    assert "unknown strategy 'ewlad'" in capsys.readouterr().err
    assert main(["check", "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["check", "--structure", "/nonexistent.pdb"]) == 2
    assert "nonexistent" in capsys.readouterr().err


def test_expressivity_cli(capsys):
    assert main(["expressivity", "--mode", "distance", "--models", "schnet", "gvp", "--tests", "chain:4",
                 "--layers", "3", "--seeds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in out["results"]}
    assert rows["schnet"]["distinguished"] is False and rows["gvp"]["distinguished"] is True
    assert all(r["agrees"] for r in out["results"])
    assert main(["expressivity", "--tests", "5body"]) == 2
    assert main(["expressivity", "--epochs", "0"]) == 2


def test_check_is_end_to_end_and_reports_the_pipeline_group(capsys):
    """Default residue features are chiral: the pipeline is SE(3) and reflection is reported, not claimed."""
    assert main(["check", "--model", "gvp", "--no-shapes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pipeline"]["group"] == "SE(3)" and "sin phi (x_s)" in out["pipeline"]["chiral_features"]
    m = out["models"][0]
    assert m["group"] == "SE(3)" and m["model_group"] == "E(3)"
    refl = [r for r in m["results"] if r["test"] == "reflection"]
    assert not any(r["claimed"] for r in refl) and max(r["error"] for r in refl) > 0.5   # measured, not hidden
    assert m["notes"]["reflection"].startswith("not claimed by the pipeline: chiral features sin phi (x_s)")
    assert main(["check", "--model", "gvp", "--no-shapes"]) == 0
    text = capsys.readouterr().out
    assert "SE(3)*" in text and "the model claims E(3); the pipeline is SE(3)" in text and "parity_even" in text


def test_check_parity_even_features_give_an_e3_pipeline(capsys):
    assert main(["check", "--model", "gvp,painn", "--residue-features", "parity_even", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pipeline"]["group"] == "E(3)" and out["ok"]
    for m in out["models"]:
        assert m["group"] == "E(3)" and not m["notes"]
        assert all(r["claimed"] and r["passed"] for r in m["results"] if r["test"] == "reflection")


def test_check_on_a_structure_transforms_the_structure_not_the_features(structures):
    """check_pipeline rebuilds the graph from moved coordinates; check_symmetry moves the featurised batch."""
    import torch
    from dataclasses import replace
    from torch_geometric.data import Batch

    from farfield.data import Featuriser, FeaturiserConfig
    from farfield.io import read_structure
    from farfield.models import InputSpec, build_backbone
    from farfield.symmetry import check_pipeline, check_symmetry

    s = read_structure(structures / "1l2y.pdb")
    f = Featuriser(FeaturiserConfig(level="residue", edges="knn:16", dtype="float64"))

    def build(Q, t):
        x = s.coords if Q is None else s.coords @ Q.numpy().T + (0 if t is None else t.numpy())
        return Batch.from_data_list([f(replace(s, coords=x))])

    ref = build(None, None)
    model = build_backbone("gvp", InputSpec.from_data(ref), cutoff=100.0)
    backbone_only = check_symmetry(model, ref)
    assert backbone_only.ok and backbone_only.error("reflection") < 1e-9          # the backbone is E(3) ...
    e2e = check_pipeline(model, build, pipeline_group=f.symmetry, chiral_features=f.chiral_features)
    assert e2e.ok and e2e.group == "SE(3)" and e2e.error("reflection") > 0.1     # ... the pipeline is not
    claimed = check_pipeline(model, build)                                       # claiming E(3) anyway fails
    assert not claimed.ok and {r.test for r in claimed.failures()} == {"reflection"}


def test_symmetric_shapes_expose_frame_based_modules():
    """A module built on a PCA frame is invariant on the peptide but not on the degenerate shapes."""
    import torch

    from farfield.io import example_path, read_structure
    from farfield.io.example import SYMMETRIC_SHAPES, symmetric_structure
    from farfield.symmetry import check_pipeline
    from farfield.data import Featuriser, FeaturiserConfig
    from dataclasses import replace
    from torch_geometric.data import Batch

    class FirstAxis(torch.nn.Module):
        symmetry = "E(3)"

        def forward(self, batch):      # squared coordinate along each graph's first principal axis
            out = []
            for g in range(batch.num_graphs):
                x = batch.pos[batch.batch == g]
                x = x - x.mean(0)
                u = torch.linalg.eigh(x.T @ x).eigenvectors[:, -1]
                out.append((x @ u) ** 2)
            return torch.cat(out).unsqueeze(-1)

    f = Featuriser(FeaturiserConfig(level="atom", dtype="float64"))

    def builder(items):
        def build(Q, t):
            if Q is None:
                return Batch.from_data_list([f(s) for s in items])
            tn = 0 if t is None else t.numpy()
            return Batch.from_data_list([f(replace(s, coords=s.coords @ Q.numpy().T + tn)) for s in items])
        return build

    peptide = read_structure(example_path())
    assert check_pipeline(FirstAxis(), builder([peptide])).ok
    shapes = [symmetric_structure(n) for n in SYMMETRIC_SHAPES]
    report = check_pipeline(FirstAxis(), builder([peptide, *shapes]))
    assert not report.ok
    assert any(n in f.where for f in report.failures() for n in ("hexagon", "octahedron", "star"))


def test_symmetric_shapes_are_degenerate_and_featurise_at_both_levels():
    import numpy as np

    from farfield.data import Featuriser, FeaturiserConfig
    from farfield.io.example import SYMMETRIC_SHAPES, symmetric_structure

    for name in SYMMETRIC_SHAPES:
        s = symmetric_structure(name)
        x = s.coords - s.coords.mean(0)
        ev = np.linalg.eigvalsh(x.T @ x)
        assert np.isclose(ev[0], ev[1], atol=1e-9) or np.isclose(ev[1], ev[2], atol=1e-9), name
        a = Featuriser(FeaturiserConfig(level="atom"))(s)
        r = Featuriser(FeaturiserConfig(level="residue", edges="knn:16"))(s)
        assert a.x_s.shape == (len(s), 9) and r.x_s.shape == (len(s), 27) and r.x_v.shape == (len(s), 3, 3)


def test_frame_averaging_is_not_claimed_on_degenerate_graphs_only(capsys):
    """PCA frames are undefined on the octahedron / hexagon: FA models report those graphs apart (unclaimed),
    while rotation is still checked, and passes, on the other graphs of the same batch."""
    assert main(["check", "--model", "fa_mpnn", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["models"][0]
    res = {(r["test"], r["output"]): r for r in rep["results"]}
    assert res[("rotation", "s")]["claimed"] and res[("rotation", "s")]["passed"]
    degen = res[("rotation (degenerate frames)", "s")]
    assert not degen["claimed"] and degen["error"] > 1e-6          # measured and shown, not hidden
    assert "degenerate" in " ".join(rep["notes"])


def test_check_on_periodic_systems_moves_the_cell_and_tests_lattice_translations(capsys):
    assert main(["check", "--model", "schnet,fa_mpnn", "--long-range", "none,ewald,latent_charges", "--periodic",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["inputs"] == ["rocksalt", "triclinic"] and out["ok"]
    names = [m["model"] for m in out["models"]]
    assert names == ["schnet", "schnet+latent_charges"]
    assert any("fa_mpnn" in s and "frame averaging" in s for s in out["skipped"])
    assert any(s.startswith("schnet+ewald") for s in out["skipped"])
    for m in out["models"]:
        lattice = [r for r in m["results"] if r["test"] == "lattice"]
        assert lattice and all(r["claimed"] and r["error"] < 1e-12 for r in lattice)
    assert main(["check", "--model", "schnet", "--periodic"]) == 0
    assert "lattice" in capsys.readouterr().out
    assert main(["check", "--model", "schnet", "--periodic", "--structure", "x.pdb"]) == 2
