import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from farfield.errors import ConfigError, InputError
from farfield.graphs import periodic
from farfield.graphs.periodic import brute_force_periodic_pairs, minimum_image, periodic_radius_graph

CUBIC = np.eye(3) * 8.0
TRICLINIC = np.array([[5.0, 0.0, 0.0], [2.5, 4.3, 0.0], [1.0, 1.5, 4.0]])


def _atoms(n, cell, seed=0, spill=0.0):
    """n random atoms in the cell; ``spill`` > 0 puts some outside it (unwrapped positions)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-spill, 1 + spill, (n, 3)) @ cell


def _graph(pos, cell, cutoff, batch=None):
    e, s = periodic_radius_graph(torch.as_tensor(pos), torch.as_tensor(cell), cutoff,
                                 None if batch is None else torch.as_tensor(batch))
    assert e.dtype == torch.int64 and s.dtype == torch.int64
    return e.numpy(), s.numpy()


def _assert_matches_reference(pos, cell, cutoff):
    e, s = _graph(pos, cell, cutoff)
    re, rs = brute_force_periodic_pairs(pos, cell, cutoff)
    np.testing.assert_array_equal(e, re)
    np.testing.assert_array_equal(s, rs)
    return e, s


def _vectors(pos, cell, e, s):
    return pos[e[0]] - pos[e[1]] + s.astype(np.float64) @ cell


def _check_norms(pos, cell, e, s, cutoff):
    d = np.linalg.norm(_vectors(pos, cell, e, s), axis=1)
    assert (d > 0).all() and (d <= cutoff + 1e-9).all()


@pytest.mark.parametrize("cell,cutoff,spill", [(CUBIC, 3.5, 0.0), (CUBIC, 3.5, 0.7), (TRICLINIC, 3.0, 0.0),
                                               (TRICLINIC, 3.0, 1.5)])
def test_matches_brute_force(cell, cutoff, spill):
    pos = _atoms(40, cell, seed=1, spill=spill)
    e, s = _assert_matches_reference(pos, cell, cutoff)
    assert e.shape[1] > 50
    _check_norms(pos, cell, e, s, cutoff)
    # sorted by (target, source, shift), no duplicates
    keys = np.column_stack([e[1], e[0], s])
    assert (np.diff(keys[np.lexsort(keys.T[::-1])], axis=0) != 0).any(1).all()
    np.testing.assert_array_equal(keys, keys[np.lexsort(keys.T[::-1])])


def test_cutoff_larger_than_half_cell_gives_multiple_and_self_images():
    pos = _atoms(6, TRICLINIC, seed=2)
    cutoff = 7.5                                   # well above every perpendicular width (~3.5-5 A)
    e, s = _assert_matches_reference(pos, TRICLINIC, cutoff)
    _check_norms(pos, TRICLINIC, e, s, cutoff)
    _, counts = np.unique(e.T, axis=0, return_counts=True)
    assert counts.max() > 5                        # one (src, tgt) pair, several shifts
    self_images = e[0] == e[1]
    assert self_images.any() and (np.abs(s[self_images]).sum(1) > 0).all()


def test_single_atom_only_self_images():
    cell = np.diag([2.0, 2.0, 2.0])
    e, s = _assert_matches_reference(np.array([[0.3, 0.1, 1.9]]), cell, 5.0)
    assert (e == 0).all()
    n = np.array([(a, b, c) for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4)])
    d = np.linalg.norm(n @ cell, axis=1)
    assert e.shape[1] == ((d > 0) & (d <= 5.0)).sum() == 80   # 6 + 12 + 8 + 6 + 24 + 24 lattice points


def test_batch_of_three_graphs_stays_within_graphs():
    cells = [CUBIC, TRICLINIC, np.diag([6.0, 7.0, 9.0])]
    sizes = [12, 7, 15]
    poss = [_atoms(n, c, seed=10 + k) for k, (n, c) in enumerate(zip(sizes, cells))]
    pos = np.concatenate(poss)
    batch = np.repeat(np.arange(3), sizes)
    cutoff = 4.5
    e, s = _graph(pos, np.stack(cells), cutoff, batch)
    assert (batch[e[0]] == batch[e[1]]).all()
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    ref_e, ref_s = [], []
    for p, c, off in zip(poss, cells, offsets):
        ge, gs = brute_force_periodic_pairs(p, c, cutoff)
        ref_e.append(ge + off)
        ref_s.append(gs)
    np.testing.assert_array_equal(e, np.concatenate(ref_e, axis=1))
    np.testing.assert_array_equal(s, np.concatenate(ref_s))
    # per-edge vectors with the target's cell
    v = pos[e[0]] - pos[e[1]] + np.einsum("ek,ekl->el", s.astype(float), np.stack(cells)[batch[e[1]]])
    d = np.linalg.norm(v, axis=1)
    assert (d > 0).all() and (d <= cutoff + 1e-9).all()


def test_lattice_translation_of_an_atom_keeps_the_edges():
    pos = _atoms(30, TRICLINIC, seed=3)
    cutoff = 4.0
    e, s = _graph(pos, TRICLINIC, cutoff)
    moved = pos.copy()
    moved[7] += np.array([2, -3, 1]) @ TRICLINIC
    e2, s2 = _graph(moved, TRICLINIC, cutoff)
    np.testing.assert_array_equal(e, e2)           # same (src, tgt) multiset, same order
    v, v2 = _vectors(pos, TRICLINIC, e, s), _vectors(moved, TRICLINIC, e2, s2)
    a = np.column_stack([e.T, v])
    b = np.column_stack([e2.T, v2])
    a = a[np.lexsort(np.round(a, 6).T[::-1])]
    b = b[np.lexsort(np.round(b, 6).T[::-1])]
    np.testing.assert_array_equal(a[:, :2], b[:, :2])
    np.testing.assert_allclose(a[:, 2:], b[:, 2:], atol=1e-9, rtol=0)
    touched = (e[0] == 7) ^ (e[1] == 7)
    assert (s[~touched] == s2[~touched]).all() and (s[touched] != s2[touched]).any(1).all()


def test_rotation_of_pos_and_cell_keeps_the_graph():
    pos = _atoms(30, TRICLINIC, seed=4)
    R = Rotation.random(random_state=5).as_matrix()
    e, s = _graph(pos, TRICLINIC, 4.0)
    e2, s2 = _graph(pos @ R.T, TRICLINIC @ R.T, 4.0)
    np.testing.assert_array_equal(e, e2)
    np.testing.assert_array_equal(s, s2)


def test_pair_exactly_at_cutoff_is_included_by_both():
    cell = np.eye(3) * 10.0
    pos = np.array([[1.0, 1.0, 1.0], [4.0, 1.0, 1.0]])     # 3.0 apart; images 7.0 apart
    e, s = _assert_matches_reference(pos, cell, 3.0)
    assert sorted(map(tuple, e.T.tolist())) == [(0, 1), (1, 0)]
    assert (s == 0).all()
    # and the image exactly at the cutoff across the boundary
    e, s = _assert_matches_reference(np.array([[1.0, 1.0, 1.0], [8.0, 1.0, 1.0]]), cell, 3.0)
    assert e.T.tolist() == [[1, 0], [0, 1]] and s.tolist() == [[-1, 0, 0], [1, 0, 0]]


def test_float32_input_and_device_and_empty():
    pos = torch.tensor(_atoms(10, CUBIC, seed=6), dtype=torch.float32)
    e, s = periodic_radius_graph(pos, torch.tensor(CUBIC, dtype=torch.float32), 3.0)
    assert e.device == pos.device and s.shape == (e.shape[1], 3)
    e, s = periodic_radius_graph(torch.zeros(0, 3), torch.tensor(CUBIC), 3.0)
    assert e.shape == (2, 0) and s.shape == (0, 3)
    # a graph index with no atoms is allowed (e.g. an empty graph in a PyG batch)
    pos = torch.tensor(_atoms(5, CUBIC))
    e, _ = periodic_radius_graph(pos, torch.tensor(np.stack([CUBIC, CUBIC])), 3.0, torch.ones(5, dtype=torch.long))
    assert e.shape[1] > 0


def test_brute_force_fallback_without_vesin(monkeypatch):
    pos = _atoms(20, TRICLINIC, seed=7, spill=0.5)
    e, s = _graph(pos, TRICLINIC, 5.0)
    monkeypatch.setattr(periodic, "_vesin", None)
    e2, s2 = _graph(pos, TRICLINIC, 5.0)
    np.testing.assert_array_equal(e, e2)
    np.testing.assert_array_equal(s, s2)


def test_minimum_image():
    rng = np.random.default_rng(8)
    vec = rng.normal(0, 10, (200, 3))
    for cell in (CUBIC, TRICLINIC):
        mi = minimum_image(vec, cell)
        n = np.array([(a, b, c) for a in range(-6, 7) for b in range(-6, 7) for c in range(-6, 7)])
        frac = (vec - mi) @ np.linalg.inv(cell)
        np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)      # a lattice translate
        cand = (vec @ np.linalg.inv(cell) - np.round(vec @ np.linalg.inv(cell)))[:, None] + n[None]
        best = np.linalg.norm(cand @ cell, axis=-1).min(1)
        np.testing.assert_allclose(np.linalg.norm(mi, axis=1), best, atol=1e-9)
    t = minimum_image(torch.tensor(vec, dtype=torch.float32), torch.tensor(CUBIC))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(cell=np.array([[5.0, 0, 0], [0, 5.0, 0], [5.0, 5.0, 0]])), InputError, "singular cell"),
    (dict(cell=np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 0]])), InputError, "singular cell"),
    (dict(cell=np.full((3, 3), np.nan)), InputError, "cell: non-finite"),
    (dict(nan_atom=True), InputError, "pos: 1 atom.* non-finite"),
    (dict(cutoff=0.0), ConfigError, "cutoff: must be a positive finite"),
    (dict(cutoff=float("inf")), ConfigError, "cutoff: must be a positive finite"),
    (dict(cutoff=-1.0), ConfigError, "cutoff"),
    (dict(cell=np.stack([CUBIC, CUBIC]), batch=np.repeat([0, 1, 2], [2, 2, 2])), InputError,
     "batch: .*2 cell\\(s\\).*mismatch"),
    (dict(cell=np.stack([CUBIC, CUBIC])), InputError, "batch: cell holds 2 graphs"),
    (dict(cell=np.eye(2)), InputError, "cell: must have shape"),
    (dict(pos=np.zeros((6, 2))), InputError, "pos: must have shape"),
    (dict(batch=np.zeros(5, dtype=np.int64)), InputError, "batch: must have shape"),
])
def test_errors(kwargs, exc, match):
    pos = kwargs.pop("pos", _atoms(6, CUBIC))
    if kwargs.pop("nan_atom", False):
        pos = pos.copy()
        pos[3, 1] = np.nan
    cell = kwargs.pop("cell", CUBIC)
    cutoff = kwargs.pop("cutoff", 3.0)
    batch = kwargs.pop("batch", None)
    with pytest.raises(exc, match=match):
        periodic_radius_graph(torch.as_tensor(pos), torch.as_tensor(cell), cutoff,
                              None if batch is None else torch.as_tensor(batch))


def test_reference_validates_too():
    with pytest.raises(InputError, match="singular cell"):
        brute_force_periodic_pairs(np.zeros((2, 3)), np.zeros((3, 3)), 2.0)
    with pytest.raises(ConfigError, match="cutoff"):
        brute_force_periodic_pairs(np.zeros((2, 3)), CUBIC, 0)
