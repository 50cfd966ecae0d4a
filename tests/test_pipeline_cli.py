import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from farfield.cli.main import main
from farfield.data import Featuriser, FeaturiserConfig, fields
from farfield.errors import ConfigError
from farfield.graphs import GraphBuilder
from farfield.io import ReadOptions, example_path, read_structure
from farfield.io.example import EXAMPLE_SEED, EXAMPLE_SEQUENCE, peptide_pdb_block


def test_atom_pipeline_fields(structures):
    d = Featuriser(FeaturiserConfig(edges="radius:4.5,max=32"))(structures / "1aki.pdb")
    assert d.num_nodes == 1001  # waters dropped by default
    assert d.x_s.shape == (1001, 9) and d.pos.dtype == torch.float32
    assert d.edge_index.shape[0] == 2 and d.edge_type.shape == (d.edge_index.shape[1],)
    assert (torch.bincount(d.edge_index[1]) <= 32).all()
    for f in (fields.POS, fields.ATOM_TYPE, fields.X_S, fields.CHAIN_INDEX, fields.RESIDUE_INDEX):
        assert f in d


def test_residue_pipeline_fields(structures):
    cfg = FeaturiserConfig(level="residue", edges="knn:30+seq:1", dtype="float64")
    d = Featuriser(cfg)(structures / "4hhb.pdb")
    assert d.num_nodes == 574 and d.x_s.shape == (574, 27) and d.x_v.shape == (574, 3, 3)
    assert d.edge_s.shape == (d.edge_index.shape[1], 16)
    assert torch.isfinite(d.x_s).all() and torch.isfinite(d.x_v).all() and torch.isfinite(d.backbone).all()
    cross = d.chain_index[d.edge_index[0]] != d.chain_index[d.edge_index[1]]
    assert cross.any() and (d.edge_s[cross] == 0).all()
    assert d.seq_index.max() < 150 and (d.seq_index[d.chain_index == 1] >= 0).all()
    assert d.edge_types == "knn:30+seq:1"


def test_rotating_the_structure_rotates_vectors_and_keeps_scalars(structures):
    from scipy.spatial.transform import Rotation

    s = read_structure(structures / "1aki.pdb")
    R = Rotation.random(random_state=0).as_matrix()
    s2 = read_structure(structures / "1aki.pdb")
    s2.coords = s2.coords @ R.T + 5.0
    f = Featuriser(FeaturiserConfig(level="residue", edges="knn:10", dtype="float64"))
    a, b = f(s), f(s2)
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.allclose(a.x_s, b.x_s, atol=1e-9)
    assert torch.allclose(a.x_v @ torch.tensor(R.T), b.x_v, atol=1e-9)


def test_batch_edges_equal_per_graph_edges(structures):
    f = Featuriser(FeaturiserConfig(edges="radius:4.5+random:3"))
    graphs = [f(structures / p) for p in ("1aki.pdb", "1l2y.pdb", "2n0n_M1.pdb")]
    for g, dat in enumerate(graphs):
        dat.graph_key = torch.tensor([g])
        GraphBuilder(f.graph.builders).apply(dat)
    batch = Batch.from_data_list(graphs)
    rebuilt = GraphBuilder(f.graph.builders).apply(batch.clone())
    def triples(d):
        return sorted(zip(*d.edge_index.tolist(), d.edge_type.tolist()))

    assert rebuilt.edge_index.shape == batch.edge_index.shape
    assert triples(rebuilt) == triples(batch)


def test_config_round_trip_and_errors():
    cfg = FeaturiserConfig(level="residue", edges="knn:30", elements=("C", "N"), read=ReadOptions(chains=("A",)))
    back = FeaturiserConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.key() == cfg.key()
    assert FeaturiserConfig().key() != cfg.key()
    with pytest.raises(ConfigError, match="level must be one of"):
        FeaturiserConfig(level="atoms")
    with pytest.raises(ConfigError, match="unknown featuriser key"):
        FeaturiserConfig.from_dict({"edge": "knn:3"})
    with pytest.raises(ConfigError, match="unknown builder"):
        FeaturiserConfig(edges="cone:3")
    with pytest.raises(ConfigError, match="presets"):
        FeaturiserConfig(elements="periodic")


def test_example_peptide_regenerates_identically(tmp_path):
    shipped = read_structure(example_path())
    (tmp_path / "p.pdb").write_text(peptide_pdb_block(EXAMPLE_SEQUENCE, EXAMPLE_SEED))
    again = read_structure(tmp_path / "p.pdb")
    assert len(shipped) == len(again) == 379
    assert (shipped.atom_name == again.atom_name).all() and (shipped.element == again.element).all()
    np.testing.assert_allclose(shipped.coords, again.coords, atol=2e-3)


def test_cli_inspect_default_and_json(capsys):
    assert main(["inspect"]) == 0
    out = capsys.readouterr().out
    assert "atoms 379" in out and "reachable within L hops" in out
    assert main(["inspect", "--json", "--edges", "radius:4.5,max=16+random:4", "--hops", "3"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["atoms"] == 379 and r["amino_acid_residues"] == 22
    assert set(r["graph"]["per_type"]) == {"radius:4.5,max=16", "random:4"}
    assert r["graph"]["per_type"]["radius:4.5,max=16"]["degree"]["max"] <= 16
    assert r["graph"]["per_type"]["random:4"]["degree"]["min"] == 4
    reach = r["graph"]["reachability"]["reachable_within"]
    assert list(reach) == ["1", "2", "3"] and reach["1"] > 0  # random edges reach beyond the cutoff in one hop


def test_cli_inspect_residue_level_and_lmdb(capsys, data_dir):
    assert main(["inspect", str(data_dir / "structures/2XHE.pdb"), "--level", "residue", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["amino_acid_residues"] == 786 and r["chain_breaks"] > 0 and r["graph"]["nodes"] == 786
    assert main(["inspect", str(data_dir / "atom3d/lmdb/tests_test_data_lmdb"), "--item", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "103l.pdb"


@pytest.mark.parametrize("args, msg", [
    (["inspect", "nope.pdb"], "nope.pdb: file not found"),
    (["inspect", "--edges", "cone:2"], "unknown builder 'cone'"),
    (["inspect", "--model", "3"], "model 3 requested"),
    (["inspect", "--hops", "0"], "--hops must be >= 1"),
])
def test_cli_errors_are_one_line_without_traceback(capsys, args, msg):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("farfield: error:") and msg in err and "Traceback" not in err


def test_cli_error_on_malformed_file_via_subprocess(data_dir):
    p = subprocess.run([sys.executable, "-m", "farfield.cli.main", "inspect",
                        str(data_dir / "structures/tricky/gemmi_5moo_header.pdb")], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "no atom records" in p.stderr


# --- CLI polish: fast parser, option validation, closed pipes -------------------------------------------
def test_parser_imports_no_heavy_modules():
    """`farfield --help` and argument errors must not wait for torch / PyG / the models to import."""
    code = ("import sys; from farfield.cli.main import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'torch_geometric', 'farfield.models', 'numpy', 'e3nn') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("value", ["-3", "0", "nan", "inf", "abc"])
def test_cli_inspect_rejects_non_positive_cutoff(capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["inspect", f"--cutoff={value}"])
    assert e.value.code == 2
    assert "--cutoff" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["inspect", "--json"], ["inspect"], ["--help"]])
def test_cli_closed_pipe_exits_quietly(args):
    p = subprocess.Popen([sys.executable, "-m", "farfield.cli.main", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()                 # the reader is gone before anything is written (`| head -0`)
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode in (0, 1, 141)
