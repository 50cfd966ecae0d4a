"""LRGB Peptides loaders (farfield.datasets.lrgb) and the downloader (farfield.datasets.download).

The real files come from FARFIELD_TEST_DATA/lrgb (skipped with a reason when absent, failed under CI=true);
every test runs with its own FARFIELD_CACHE under tmp_path and never touches the network (the downloader is
exercised against a local http.server on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from _http import RangeHandler, serve
from farfield.datasets import download as dl
from farfield.datasets import lrgb
from farfield.errors import ConfigError, InputError
from tests.conftest import data_root

CSV = "peptide_multi_class_dataset.csv.gz"
SPLIT = "splits_random_stratified_peptide.pickle"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FARFIELD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FARFIELD_OFFLINE", "1")      # no test may reach the network


@pytest.fixture(scope="session")
def lrgb_dir() -> Path:
    d = data_root() / "lrgb"
    if not (d / "peptides-functional" / "raw" / CSV).is_file():
        msg = f"LRGB Peptides-func files are missing under {d} (set FARFIELD_TEST_DATA)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d


def _files(lrgb_dir):
    return lrgb_dir / "peptides-functional" / "raw" / CSV, lrgb_dir / "peptides-functional" / SPLIT


# ---------------------------------------------------------------------------------------------- sources
def test_md5_match_and_split_sizes(lrgb_dir):
    csv, split = lrgb.source_files("peptides_func", lrgb_dir, download=False)
    assert csv.name == CSV and split.name == SPLIT
    assert dl.md5sum(csv) == "701eb743e899f4d793f0e13c8fa5a1b4"
    assert dl.md5sum(split) == "5a0114bdadc80b94fc7ae974f13ef061"
    tr, va, te = lrgb.official_split("peptides_func", lrgb_dir)
    assert (len(tr), len(va), len(te)) == (10873, 2331, 2331)
    allidx = np.sort(np.concatenate([tr, va, te]))
    assert np.array_equal(allidx, np.arange(15535))          # 15,535 items, each in exactly one split
    # the same folder given at any depth
    assert lrgb.source_files("peptides_func", lrgb_dir / "peptides-functional", download=False)[0] == csv


def test_md5_mismatch_names_the_file(lrgb_dir, tmp_path):
    csv, split = _files(lrgb_dir)
    d = tmp_path / "bad"
    (d / "raw").mkdir(parents=True)
    data = bytearray(csv.read_bytes())
    data[100] ^= 0xFF
    (d / "raw" / CSV).write_bytes(bytes(data))
    shutil.copy(split, d / SPLIT)
    with pytest.raises(InputError, match="MD5 mismatch") as e:
        lrgb.peptides_func(d, download=False)
    assert CSV in str(e.value) and "701eb743e899f4d793f0e13c8fa5a1b4" in str(e.value)


def test_missing_files_offline_error_lists_them(tmp_path):
    with pytest.raises(InputError) as e:
        lrgb.peptides_struct(tmp_path / "empty")
    msg = str(e.value)
    assert "peptide_structure_dataset.csv.gz" in msg and "splits_random_stratified_peptide_structure.pickle" in msg
    assert "9786061a34298a0684150f2e4ff13f47" in msg and "https://www.dropbox.com/" in msg
    assert "offline" in msg and "copy the files" in msg


def test_options_are_checked(lrgb_dir):
    with pytest.raises(ConfigError, match="hydrogens"):
        lrgb.peptides_func(lrgb_dir, hydrogens=True)
    with pytest.raises(ConfigError, match="target"):
        lrgb.peptides_func(lrgb_dir, target="energy")
    with pytest.raises(ConfigError, match="unknown LRGB dataset"):
        lrgb.load_peptides("peptides_foo")


# ---------------------------------------------------------------------------------------------- features
def _blocks_are_onehot(x, dims):
    c = 0
    for d in dims:
        assert torch.all(x[:, c:c + d].sum(1) == 1)
        c += d


def test_featurised_graph_shapes_and_ranges(lrgb_dir):
    gs = lrgb.peptides_func(lrgb_dir, limit=25, lap_pe=4, rwse=8, progress=False)
    assert len(gs) == 25
    lay = lrgb.feature_layout(4, 8)
    assert (lay["lap_pe"], lay["lap_eigvals"], lay["rwse"]) == (slice(174, 178), slice(178, 182), slice(182, 190))
    # random sign flips touch the eigenvectors only, never the eigenvalue columns
    assert lrgb.sign_flip_columns({"lap_pe": 4, "rwse": 8}) == lay["lap_pe"]
    tr, va, te = lrgb.official_split("peptides_func", lrgb_dir)
    code = np.zeros(15535, dtype=int)
    code[va], code[te] = 1, 2
    for i, g in enumerate(gs):
        n, e = g.num_nodes, g.edge_index.shape[1]
        assert g.x_s.shape == (n, lrgb.ATOM_WIDTH + 16) == (n, 190) and g.x_s.dtype == torch.float32
        assert g.edge_s.shape == (e, lrgb.BOND_WIDTH) == (e, 13)
        assert 5 < n < 500 and e > 0 and e % 2 == 0
        _blocks_are_onehot(g.x_s[:, lay["ogb"]], lrgb.ATOM_FEATURE_DIMS)
        _blocks_are_onehot(g.edge_s, lrgb.BOND_FEATURE_DIMS)
        ei = g.edge_index
        assert ei.min() >= 0 and ei.max() < n and not (ei[0] == ei[1]).any()
        assert torch.equal(ei[:, 0::2], ei[:, 1::2].flip(0))            # both directions, OGB order
        assert torch.equal(g.edge_s[0::2], g.edge_s[1::2])
        assert torch.all(g.edge_type == 0) and g.edge_types == "bond"
        assert g.y.shape == (1, 10) and set(g.y.unique().tolist()) <= {0.0, 1.0}
        assert int(g.split) == code[i] and int(g.graph_key) == i and g.pos is None
        rw = g.x_s[:, lay["rwse"]]
        assert rw.min() >= 0 and rw.max() <= 1 and torch.all(rw[:, 0] == 0)   # no self loops: P_ii = 0
        pe = g.x_s[:, lay["lap_pe"]].double()
        assert torch.allclose(pe.T @ pe, torch.eye(4, dtype=torch.float64), atol=1e-4)
        # GraphGPS keeps eigenvector 0: constant (1/sqrt(n)) on these connected graphs, eigenvalue 0
        assert torch.allclose(pe[:, 0], torch.full((n,), n ** -0.5, dtype=torch.float64), atol=1e-4)
        assert torch.allclose(pe[:, 1:].sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-4)
        ev = g.x_s[:, lay["lap_eigvals"]].double()
        assert torch.all(ev == ev[0]) and abs(float(ev[0, 0])) < 1e-5 and torch.all(ev[0, 1:] > 0)
        assert torch.all(ev[0, 1:] >= ev[0, :-1])
        adj = torch.zeros(n, n, dtype=torch.float64)
        adj[ei[0], ei[1]] = 1.0
        lap = torch.diag(adj.sum(1)) - adj
        assert torch.allclose(lap @ pe, pe * ev[0], atol=1e-4)
    # the old setting: eigenvectors 1..k without eigenvalue columns
    old = lrgb.peptides_func(lrgb_dir, limit=3, lap_pe=4, lap_skip_trivial=True, lap_eigvals=False, progress=False)
    assert lrgb.sign_flip_columns({"lap_pe": 4, "lap_eigvals": False}) == slice(174, 178)
    for g in old:
        pe = g.x_s[:, 174:].double()
        assert g.x_s.shape[1] == 178
        assert torch.allclose(pe.sum(0), torch.zeros(4, dtype=torch.float64), atol=1e-4)  # orthogonal to 1


def test_ogb_features_of_known_molecules():
    g = lrgb.smiles_to_graph("CC(=O)O")                    # acetic acid
    assert g["atom"].shape == (4, 9) and g["edge_index"].shape == (2, 6)
    assert g["atom"][0].tolist() == [5, 0, 4, 5, 3, 0, 2, 0, 0]   # CH3: C, deg 4 (total), q 0, 3 H, SP3
    assert g["atom"][2].tolist()[:2] == [7, 0] and g["atom"][2][6] == 1   # =O: O, SP2
    assert g["bond"][2].tolist()[0] == 1                     # C=O is DOUBLE
    b = lrgb.smiles_to_graph("c1ccccc1")
    assert np.all(b["atom"][:, 7] == 1) and np.all(b["atom"][:, 8] == 1) and np.all(b["bond"][:, 0] == 3)
    q = lrgb.smiles_to_graph("C[NH3+]")
    assert q["atom"][1][3] == 6 and q["atom"][1][4] == 3     # formal charge +1 -> index 6
    with pytest.raises(InputError, match="cannot parse"):
        lrgb.smiles_to_graph("C1CC(", where="row 7")


def test_positional_encodings_small_graphs():
    # cycle of 6: RWSE return probabilities are 0 at odd steps, 1/2 at step 2, 3/8 at step 4
    n = 6
    src = np.arange(n)
    ei = np.stack([np.r_[src, (src + 1) % n], np.r_[(src + 1) % n, src]])
    rw = lrgb.random_walk_se(ei, n, 4)
    assert np.allclose(rw, np.array([0, 0.5, 0, 0.375])[None].repeat(n, 0))
    # path of 5, skip_trivial (the pre-GraphGPS setting): L v = lambda v with the k smallest non-zero eigenvalues
    ei = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    pe = lrgb.laplacian_pe(ei, 5, 2, skip_trivial=True, eigenvalues=False).astype(np.float64)
    a = np.zeros((5, 5))
    a[ei[0], ei[1]] = a[ei[1], ei[0]] = 1
    lap = np.diag(a.sum(1)) - a
    lam = 2 - 2 * np.cos(np.pi * np.arange(1, 3) / 5)
    assert np.allclose(lap @ pe, pe * lam[None], atol=1e-5)
    first = (np.abs(pe) >= np.abs(pe).max(0) - 1e-5).argmax(0)
    assert np.all(pe[first, [0, 1]] > 0)                        # sign convention (ties: first entry)
    assert lrgb.laplacian_pe(ei, 5, 8, skip_trivial=True, eigenvalues=False)[:, 4:].tolist() == [[0.0] * 4] * 5
    sym = lrgb.laplacian_pe(ei, 5, 2, normalization="sym", eigenvalues=False)
    assert np.allclose(np.linalg.norm(sym, axis=0), 1, atol=1e-5)
    x = torch.ones(5, 3)
    flipped = lrgb.random_sign_flip(x, torch.tensor([0, 0, 0, 1, 1]), slice(1, 3), torch.Generator().manual_seed(0))
    assert torch.all(flipped[:, 0] == 1) and torch.all(flipped.abs() == 1)
    assert torch.all(flipped[:3, 1:] == flipped[0, 1:]) and torch.all(flipped[3:, 1:] == flipped[3, 1:])


def _graphgps_lap(ei, n, k, normalization="none"):
    """Reference LapPE as GraphGPS's ``get_lap_decomp_stats`` computes it (Rampasek et al. 2022), written
    here with numpy: eigendecomposition of L (D - A, or I - D^-1/2 A D^-1/2 with 0 for isolated nodes), the k
    lowest eigenpairs including eigenvector 0, eigenvalues clipped at 0, eigenvectors L2-normalised,
    NaN-padded to k when n < k."""
    a = np.zeros((n, n))
    ei = np.asarray(ei)
    if ei.size:
        a[ei[0], ei[1]] = a[ei[1], ei[0]] = 1
    deg = a.sum(1)
    if normalization == "none":
        lap = np.diag(deg) - a
    else:
        d = np.zeros(n)
        d[deg > 0] = 1 / np.sqrt(deg[deg > 0])
        lap = np.eye(n) - d[:, None] * a * d[None, :]
    vals, vecs = np.linalg.eigh(lap)
    idx = vals.argsort()[:k]
    vals, vecs = np.clip(vals[idx], 0, None), vecs[:, idx]
    vecs = vecs / np.linalg.norm(vecs, axis=0, keepdims=True)
    pad = k - len(idx)
    return np.r_[vals, np.full(pad, np.nan)], np.c_[vecs, np.full((n, pad), np.nan)], lap


def _check_against_graphgps(ei, n, k, normalization="none"):
    got = lrgb.laplacian_pe(ei, n, k, normalization).astype(np.float64)
    assert got.shape == (n, 2 * k)
    vec, val = got[:, :k], got[:, k:]
    ref_val, ref_vec, lap = _graphgps_lap(ei, n, k, normalization)
    m = min(n, k)
    # eigenvalues: one block of k columns, the same on every node; padding (GraphGPS: NaN) is 0
    assert np.allclose(val, np.nan_to_num(ref_val, nan=0.0)[None], atol=1e-5)
    assert (vec[:, m:] == 0).all() and (val[:, m:] == 0).all()
    vec, ref_vec, lam = vec[:, :m], ref_vec[:, :m], ref_val[:m]
    assert np.allclose(vec.T @ vec, np.eye(m), atol=1e-5)
    assert np.allclose(lap @ vec, vec * lam[None], atol=1e-5)
    # each eigenvector equals GraphGPS's up to its (arbitrary) sign; within a degenerate eigenspace the basis
    # is arbitrary, so there the spanned space is compared (when the whole space is among the k kept)
    for v in np.unique(np.round(lam, 6)):
        cols = np.flatnonzero(np.abs(lam - v) < 1e-6)
        mult = int((np.abs(np.linalg.eigvalsh(lap) - v) < 1e-6).sum())
        if len(cols) == 1 and mult == 1:
            j = cols[0]
            assert np.allclose(vec[:, j], ref_vec[:, j], atol=1e-5) or np.allclose(vec[:, j], -ref_vec[:, j], atol=1e-5)
        elif len(cols) == mult:
            assert np.allclose(vec[:, cols] @ vec[:, cols].T, ref_vec[:, cols] @ ref_vec[:, cols].T, atol=1e-5)
    # farfield's deterministic sign: the largest-magnitude entry (first on ties) is positive
    first = (np.abs(vec) >= np.abs(vec).max(0) - 1e-5).argmax(0)
    assert np.all(vec[first, np.arange(m)] > 0)
    return vec, lam


def _und(pairs):
    p = np.asarray(pairs).T
    return np.concatenate([p, p[::-1]], 1)


def test_laplacian_pe_matches_graphgps():
    path = _und([(i, i + 1) for i in range(6)])                       # 7 nodes
    vec, lam = _check_against_graphgps(path, 7, 4)
    assert np.allclose(vec[:, 0], 7 ** -0.5, atol=1e-6) and abs(lam[0]) < 1e-9    # eigenvector 0 kept
    assert np.allclose(lam, 2 - 2 * np.cos(np.pi * np.arange(4) / 7), atol=1e-6)
    ring = _und([(i, (i + 1) % 6) for i in range(6)])                 # degenerate pairs
    _check_against_graphgps(ring, 6, 3)
    _check_against_graphgps(ring, 6, 4)
    two = _und([(0, 1), (1, 2), (3, 4)])                              # components {0,1,2}, {3,4}, isolated 5
    vec, lam = _check_against_graphgps(two, 6, 5)
    assert np.allclose(lam[:3], 0, atol=1e-6)                         # one zero eigenvalue per component
    _check_against_graphgps(path, 7, 10)                              # fewer nodes than k: padded
    _check_against_graphgps(_und([(0, 1)]), 2, 10)
    vec, lam = _check_against_graphgps(np.zeros((2, 0), dtype=np.int64), 1, 3)   # a single atom
    assert vec.tolist() == [[1.0]] and lam.tolist() == [0.0]
    _check_against_graphgps(path, 7, 4, normalization="sym")
    _check_against_graphgps(two, 6, 4, normalization="sym")
    assert lrgb.laplacian_pe(path, 0, 4).shape == (0, 8)


def test_laplacian_pe_options():
    path = _und([(i, i + 1) for i in range(6)])
    full = lrgb.laplacian_pe(path, 7, 4)
    vec_only = lrgb.laplacian_pe(path, 7, 4, eigenvalues=False)
    assert vec_only.shape == (7, 4) and np.array_equal(vec_only, full[:, :4])
    # skip_trivial: eigenvectors 1..k (eigenvector 0 dropped), their eigenvalues after them
    skip = lrgb.laplacian_pe(path, 7, 3, skip_trivial=True)
    more = lrgb.laplacian_pe(path, 7, 4)
    assert skip.shape == (7, 6)
    assert np.allclose(skip[:, :3], more[:, 1:4]) and np.allclose(skip[:, 3:], more[:, 5:8])
    assert np.allclose(skip[:, :3].sum(0), 0, atol=1e-6)
    with pytest.raises(ConfigError, match="normalization"):
        lrgb.laplacian_pe(path, 7, 4, normalization="rw")


def test_laplacian_pe_sym_isolated_atoms_no_warning():
    ei = _und([(0, 1), (1, 2)])                                       # nodes 3 and 4 have degree 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pe = lrgb.laplacian_pe(ei, 5, 4, normalization="sym")
        lrgb.laplacian_pe(ei, 5, 4, normalization="sym", skip_trivial=True)
    assert np.isfinite(pe).all()
    _check_against_graphgps(ei, 5, 4, normalization="sym")


def test_laplacian_pe_real_peptide(lrgb_dir):
    import pandas as pd
    smi = pd.read_csv(_files(lrgb_dir)[0], nrows=1)["smiles"][0]
    g = lrgb.smiles_to_graph(smi)
    n = g["atom"].shape[0]
    vec, lam = _check_against_graphgps(g["edge_index"], n, 10)        # the Peptides setting: k = 10, L = D - A
    assert n > 10 and lam[0] < 1e-6 and np.allclose(vec[:, 0], n ** -0.5, atol=1e-5)


def test_task_info_pooling_is_mean():
    for name in ("peptides_func", "peptides_struct"):
        assert lrgb.DATASET_INFO[name]["task"]["pooling"] == "mean"    # as GraphGPS / LRGB for Peptides


def test_conformer_seeded_and_cached(tmp_path):
    smi = "N[C@@H](C)C(=O)N[C@@H](CO)C(=O)O"                 # Ala-Ser
    a = lrgb.embed_conformer(smi, seed=3, cache_dir=tmp_path / "conf")
    files = list((tmp_path / "conf").rglob("*.npy"))
    assert a.shape == (lrgb.smiles_to_graph(smi)["atom"].shape[0], 3) and len(files) == 1
    assert np.array_equal(a, lrgb.embed_conformer(smi, seed=3))          # seeded: reproducible without cache
    files[0].write_bytes(b"garbage")                                      # corrupted cache entry: recomputed
    assert np.array_equal(a, lrgb.embed_conformer(smi, seed=3, cache_dir=tmp_path / "conf"))
    d = np.linalg.norm(a[:, None] - a[None], axis=-1)
    g = lrgb.smiles_to_graph(smi)
    assert np.all((d[g["edge_index"][0], g["edge_index"][1]] > 1.1) & (d[g["edge_index"][0], g["edge_index"][1]] < 1.7))


# ---------------------------------------------------------------------------------------------- cache
def test_cache_reuse_invalidation_and_corruption(lrgb_dir, tmp_path, monkeypatch):
    calls = []
    real = lrgb._featurise
    monkeypatch.setattr(lrgb, "_featurise", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    a = lrgb.peptides_func(lrgb_dir, limit=8, progress=False)
    assert len(calls) == 1
    proc = Path(os.environ["FARFIELD_CACHE"]) / "lrgb" / "processed"
    pt = sorted(proc.glob("*.pt"))
    assert len(pt) == 1 and pt[0].with_name(pt[0].name + ".md5").is_file()
    b = lrgb.peptides_func(lrgb_dir, limit=8, progress=False)                # from the cache
    assert len(calls) == 1
    assert all(torch.equal(x.x_s, y.x_s) and torch.equal(x.edge_index, y.edge_index) for x, y in zip(a, b))
    c = lrgb.peptides_func(lrgb_dir, limit=8, rwse=3, progress=False)        # a changed option rebuilds
    assert len(calls) == 2 and c[0].x_s.shape[1] == 177 and len(list(proc.glob("*.pt"))) == 2
    raw = bytearray(pt[0].read_bytes())                                       # corrupt the first cache file
    raw[len(raw) // 2] ^= 0xFF
    pt[0].write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="rebuilding"):
        d = lrgb.peptides_func(lrgb_dir, limit=8, progress=False)
    assert len(calls) == 3 and all(torch.equal(x.x_s, y.x_s) for x, y in zip(a, d))
    pt[0].write_bytes(b"")                                                   # truncated: rebuilt too
    with pytest.warns(UserWarning):
        lrgb.peptides_func(lrgb_dir, limit=8, progress=False)
    assert len(calls) == 4
    lrgb.peptides_func(lrgb_dir, limit=8, progress=False)                     # and then valid again
    assert len(calls) == 4


@pytest.mark.slow
def test_full_peptides_func(lrgb_dir):
    gs = lrgb.peptides_func(lrgb_dir)
    assert len(gs) == 15535
    sizes = np.bincount([int(g.split) for g in gs], minlength=3)
    assert sizes.tolist() == [10873, 2331, 2331]
    assert all(g.x_s.shape[1] == 174 and g.edge_s.shape[1] == 13 for g in gs)


# ---------------------------------------------------------------------------------------------- metrics
def _ap_brute(y, s):
    """Average precision from its definition: thresholds at every distinct score, high to low;
    sum of (recall gain) x (precision at that threshold)."""
    ap, prev_r, npos = 0.0, 0.0, y.sum()
    for t in sorted(set(s.tolist()), reverse=True):
        pred = s >= t
        tp = (y[pred] == 1).sum()
        p, r = tp / pred.sum(), tp / npos
        ap += (r - prev_r) * p
        prev_r = r
    return ap


def test_average_precision_matches_reference():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, k = int(rng.integers(5, 80)), int(rng.integers(1, 11))
        y = (rng.random((n, k)) < rng.uniform(0.05, 0.6)).astype(float)
        s = rng.normal(size=(n, k))
        if trial % 2:
            s = np.round(s, 1)                                  # ties
        y[:, 0] = 0                                            # a label with no positive is skipped
        ok = [c for c in range(k) if 0 < y[:, c].sum() < n]
        got = lrgb.lrgb_average_precision(y, s) if ok else None
        if not ok:
            with pytest.raises(ValueError):
                lrgb.lrgb_average_precision(y, s)
            continue
        ref = np.mean([_ap_brute(y[:, c], s[:, c]) for c in ok])
        assert got == pytest.approx(ref, abs=1e-12)
    # NaN labels are left out, torch input accepted
    y = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0]], dtype=float)
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.7], [0.5, 0.3]])
    exp = np.mean([_ap_brute(y[:, 0], s[:, 0]), _ap_brute(y[[0, 2, 3], 1], s[[0, 2, 3], 1])])
    assert lrgb.lrgb_average_precision(torch.tensor(y), torch.tensor(s)) == pytest.approx(exp)


def test_average_precision_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = (rng.random((300, 10)) < 0.2).astype(float)
    s = np.round(rng.normal(size=(300, 10)) + y, 2)
    ref = np.mean([metrics.average_precision_score(y[:, c], s[:, c]) for c in range(10)])
    assert lrgb.lrgb_average_precision(y, s) == pytest.approx(ref, abs=1e-12)


def test_mae():
    y = np.array([[0.0, 1.0], [2.0, np.nan]])
    assert lrgb.lrgb_mae(y, np.array([[1.0, 1.0], [0.0, 5.0]])) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- downloader
_Handler = RangeHandler          # its class attribute ``log`` records the requests


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    with serve(root) as base:
        yield root, base


def _remote(root, base, name, payload, md5=None):
    (root / name).write_bytes(payload)
    return dl.RemoteFile(f"sub/{name}", f"{base}/{name}", md5 or hashlib.md5(payload).hexdigest(), len(payload))


def test_download_success_cache_and_resume(server, tmp_path):
    root, base = server
    payload = os.urandom(300_000)
    rf = _remote(root, base, "a.bin", payload)
    dest = tmp_path / "dest"
    p = dl.fetch(rf, dest, offline=False, progress=False)
    assert p == dest / "sub" / "a.bin" and p.read_bytes() == payload and len(_Handler.log) == 1
    assert dl.fetch(rf, dest, offline=True, progress=False) == p          # cached: no request, works offline
    assert len(_Handler.log) == 1
    # resume: a partial download continues with a Range request
    part = dest / "sub" / "b.bin.part"
    rf2 = _remote(root, base, "b.bin", payload[::-1])
    part.write_bytes(payload[::-1][:100_000])
    p2 = dl.fetch(rf2, dest, offline=False, progress=False)
    assert p2.read_bytes() == payload[::-1] and _Handler.log[-1][1] == "bytes=100000-" and not part.exists()


def test_download_md5_mismatch_missing_and_offline(server, tmp_path):
    root, base = server
    dest = tmp_path / "dest"
    bad = _remote(root, base, "c.bin", b"x" * 1000, md5="0" * 32)
    with pytest.raises(InputError, match="MD5 mismatch") as e:
        dl.fetch(bad, dest, offline=False, progress=False)
    assert "c.bin" in str(e.value) and not (dest / "sub" / "c.bin").exists()
    assert not (dest / "sub" / "c.bin.part").exists()                      # a bad download is not kept
    gone = dl.RemoteFile("sub/gone.bin", f"{base}/gone.bin", "1" * 32)
    good = _remote(root, base, "d.bin", b"y" * 10)
    with pytest.raises(InputError, match="download failed") as e:
        dl.fetch_all([good, gone], dest, offline=False, progress=False)
    assert "gone.bin" in str(e.value) and "404" in str(e.value) and f"{base}/gone.bin" in str(e.value)
    other = dl.RemoteFile("sub/e.bin", f"{base}/e.bin", "2" * 32)
    n = len(_Handler.log)
    with pytest.raises(InputError, match="offline") as e:
        dl.fetch_all([gone, other], dest, search=[tmp_path / "mine"], progress=False)   # FARFIELD_OFFLINE=1
    msg = str(e.value)
    assert "gone.bin" in msg and "e.bin" in msg and "1" * 32 in msg and str(tmp_path / "mine") in msg
    assert "copy the files" in msg and len(_Handler.log) == n                 # nothing was requested
    # an existing local copy with the wrong content is reported, never overwritten
    (dest / "sub" / "e.bin").write_bytes(b"zzz")
    with pytest.raises(InputError, match="MD5 mismatch"):
        dl.fetch(other, dest, offline=False, progress=False)
    assert (dest / "sub" / "e.bin").read_bytes() == b"zzz"


def test_loader_downloads_official_files_from_server(server, lrgb_dir, monkeypatch):
    root, base = server
    csv, split = _files(lrgb_dir)
    shutil.copy(csv, root / CSV)
    shutil.copy(split, root / SPLIT)
    folder, rc, rs = lrgb.SOURCES["peptides_func"]
    monkeypatch.setitem(lrgb.SOURCES, "peptides_func", (folder, dl.RemoteFile(rc.name, f"{base}/{CSV}", rc.md5),
                                                        dl.RemoteFile(rs.name, f"{base}/{SPLIT}", rs.md5)))
    monkeypatch.setenv("FARFIELD_OFFLINE", "0")
    gs = lrgb.peptides_func(limit=3, progress=False)
    assert len(gs) == 3 and len(_Handler.log) == 2
    got = Path(os.environ["FARFIELD_CACHE"]) / "lrgb" / "peptides-functional"
    assert dl.md5sum(got / "raw" / CSV) == rc.md5 and (got / SPLIT).is_file()
    assert len(lrgb.official_split("peptides_func")[0]) == 10873 and len(_Handler.log) == 2


# ---------------------------------------------------------------------------------------------- registry, struct
def test_registered_with_info():
    from farfield.datasets import DATASETS
    assert DATASETS["peptides_func"] is lrgb.peptides_func and DATASETS["peptides_struct"] is lrgb.peptides_struct
    assert lrgb.peptides_func.info["provides_edges"] and lrgb.peptides_struct.info["metric"] == "mae"


def test_struct_targets_standardised_and_selected(lrgb_dir, tmp_path, monkeypatch):
    """Peptides-struct's CSV is not in the test data: a stand-in with the official columns (first 30 func
    SMILES, random targets) checks the standardisation and the target option."""
    import pickle

    import pandas as pd
    src = pd.read_csv(_files(lrgb_dir)[0], nrows=30)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"smiles": src["smiles"], "peptide_seq": src["peptide_seq"],
                       **{c: rng.normal(3.0, 2.0, 30) for c in lrgb.STRUCT_TARGETS}})
    d = tmp_path / "struct"
    (d / "raw").mkdir(parents=True)
    df.to_csv(d / "raw" / "peptide_structure_dataset.csv.gz", index=False)
    perm = rng.permutation(30)
    with open(d / "splits_random_stratified_peptide_structure.pickle", "wb") as f:
        pickle.dump({"train": perm[:20], "val": perm[20:25], "test": perm[25:]}, f)
    folder, rc, rs = lrgb.SOURCES["peptides_struct"]
    monkeypatch.setitem(lrgb.SOURCES, "peptides_struct", (
        folder, dl.RemoteFile(rc.name, rc.url, dl.md5sum(d / "raw" / "peptide_structure_dataset.csv.gz")),
        dl.RemoteFile(rs.name, rs.url, dl.md5sum(d / "splits_random_stratified_peptide_structure.pickle"))))
    gs = lrgb.peptides_struct(d, progress=False)
    y = torch.cat([g.y for g in gs]).double()
    assert y.shape == (30, 11)
    assert torch.allclose(y.mean(0), torch.zeros(11, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(y.std(0), torch.ones(11, dtype=torch.float64), atol=1e-6)
    assert [int(g.split) for g in gs].count(0) == 20
    one = lrgb.peptides_struct(d, target="length_b", progress=False)
    assert one[0].y.shape == (1, 1)
    assert torch.equal(torch.cat([g.y for g in one])[:, 0], torch.cat([g.y for g in gs])[:, 7])
    raw = lrgb.peptides_struct(d, standardize=False, progress=False)
    assert np.allclose(torch.cat([g.y for g in raw])[:, 0].numpy(), df[lrgb.STRUCT_TARGETS[0]].to_numpy(), atol=1e-5)


def test_one_epoch_training_on_peptides_func(lrgb_dir, tmp_path):
    """The 2D path end to end: bond edges and the official split come from the dataset, the LRGB AP is the
    metric (a 300-row slice of the real file)."""
    import json

    from farfield.cli.main import main
    out = tmp_path / "run"
    assert main(["train", "data.dataset=peptides_func", f"data.path={lrgb_dir}", "data.options={limit: 300}",
                 "task.kind=multilabel", "task.num_outputs=10", "model.backbone=gcn",
                 "model.backbone_options={hidden: 16, num_layers: 2}", "optim.epochs=1", "run.progress=false",
                 "--out", str(out)]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert 0 < res["test/ap"] <= 1 and 0 < res["val/ap"] <= 1
