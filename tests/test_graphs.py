import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from farfield.errors import ConfigError
from farfield.graphs import KNN, GraphBuilder, RandomLongRange, Radius, Sequence, parse_edge_spec


def _cloud(n, seed=0, scale=12.0):
    return np.random.default_rng(seed).uniform(0, scale, (n, 3))


def _batch(sizes, seed=0):
    rng = np.random.default_rng(seed)
    pos = np.concatenate([rng.uniform(0, 4 * s ** (1 / 3), (s, 3)) + rng.uniform(-50, 50, 3) for s in sizes])
    batch = np.repeat(np.arange(len(sizes)), sizes)
    return pos, batch


def _sorted_pairs(e):
    e = np.asarray(e)
    return sorted(zip(e[0].tolist(), e[1].tolist()))


# --- brute-force references --------------------------------------------------------------------
def _bf_dist(pos):
    return np.linalg.norm(pos[:, None] - pos[None], axis=-1)


def brute_radius(pos, group, r, cap=None):
    d = _bf_dist(pos)
    out = []
    for i in range(len(pos)):  # target
        cand = [j for j in range(len(pos)) if j != i and group[j] == group[i] and d[i, j] <= r]
        cand.sort(key=lambda j: (d[i, j], j))
        if cap is not None:
            cand = cand[:cap]
        out += [(j, i) for j in cand]
    return sorted(out)


def brute_knn(pos, group, k):
    d = _bf_dist(pos)
    out = []
    for i in range(len(pos)):
        cand = sorted((j for j in range(len(pos)) if j != i and group[j] == group[i]), key=lambda j: (d[i, j], j))
        out += [(j, i) for j in cand[:k]]
    return sorted(out)


def brute_seq(group, offsets):
    n = len(group)
    return sorted((i + o, i) for i in range(n) for o in offsets if 0 <= i + o < n and group[i + o] == group[i])


def brute_full(group):
    n = len(group)
    return sorted((j, i) for i in range(n) for j in range(n) if i != j and group[i] == group[j])


@pytest.mark.parametrize("cap", [None, 1, 4, 12])
def test_radius_matches_brute_force(cap):
    pos, batch = _batch([40, 1, 73, 2, 55])
    e = Radius(3.0, max_neighbours=cap)
    got = GraphBuilder([e])(pos, batch).edge_index
    assert _sorted_pairs(got) == brute_radius(pos, batch, 3.0, cap)


def test_radius_cap_ties_go_to_lower_source_index():
    # target 0 at the origin, 4 sources at exactly distance 1 (ties), cap 2 -> sources 1 and 2
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=float)
    e = GraphBuilder("radius:1.5,max=2")(pos).edge_index.numpy()
    into0 = sorted(e[0, e[1] == 0].tolist())
    assert into0 == [1, 2]


@pytest.mark.parametrize("k", [1, 5, 30])
def test_knn_matches_brute_force(k):
    pos, batch = _batch([40, 3, 61, 1, 20], seed=1)
    got = GraphBuilder([KNN(k)])(pos, batch).edge_index
    assert _sorted_pairs(got) == brute_knn(pos, batch, k)


def test_knn_duplicate_points_never_self_loop():
    pos = np.zeros((5, 3))
    e = GraphBuilder("knn:2")(pos).edge_index.numpy()
    assert (e[0] != e[1]).all() and e.shape[1] == 10


def test_sequence_and_full_match_brute_force():
    pos, batch = _batch([7, 1, 9, 4], seed=2)
    chain = np.array([0] * 4 + [1] * 3 + [0] + [0] * 5 + [1] * 4 + [0] * 4)
    group = batch * 10 + chain
    got = GraphBuilder([Sequence((-2, -1, 1, 3))])(pos, batch, chain).edge_index
    assert _sorted_pairs(got) == brute_seq(group, (-2, -1, 1, 3))
    assert _sorted_pairs(GraphBuilder("full")(pos, batch).edge_index) == brute_full(batch)
    assert _sorted_pairs(GraphBuilder("full:chain=1")(pos, batch, chain).edge_index) == brute_full(group)
    assert _sorted_pairs(GraphBuilder("radius:3,chain=1")(pos, batch, chain).edge_index) == \
        brute_radius(pos, group, 3.0)


def test_sequence_needs_contiguous_chains():
    with pytest.raises(ConfigError, match="contiguous"):
        GraphBuilder("seq:1")(np.zeros((4, 3)), chain=np.array([0, 1, 0, 1]))


ALL_SPECS = ["radius:3", "radius:3,max=6", "knn:8", "seq:2", "full", "random:6", "random:4,law=exponential",
             "random:4,law=uniform,dir=outgoing", "radius:2.5+random:5", "knn:4+seq:1+random:3,exclude=0"]


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_edges_invariant_to_rotation_translation_and_batch(spec):
    sizes = [30, 1, 45, 12]
    pos, batch = _batch(sizes, seed=3)
    gb = parse_edge_spec(spec)
    e = gb(pos, batch)
    # no self-loops and no edge crosses graphs
    ei = e.edge_index.numpy()
    assert (ei[0] != ei[1]).all()
    assert (batch[ei[0]] == batch[ei[1]]).all()
    # unique edges
    assert len(set(zip(ei[0].tolist(), ei[1].tolist()))) == ei.shape[1]
    # rotation + translation invariance of the edge set (and of the types)
    R = Rotation.random(random_state=4).as_matrix()
    e2 = gb(pos @ R.T + np.array([3.0, -7.0, 11.0]), batch)
    assert _sorted_pairs(e.edge_index) == _sorted_pairs(e2.edge_index)
    assert sorted(zip(ei[0].tolist(), ei[1].tolist(), e.edge_type.tolist())) == \
        sorted(zip(*e2.edge_index.tolist(), e2.edge_type.tolist()))
    # building on the batch == building per graph (graph key = index in batch) and concatenating
    offsets = np.r_[0, np.cumsum(sizes)]
    per_graph = []
    for g, n in enumerate(sizes):
        eg = gb(pos[offsets[g]:offsets[g + 1]], graph_key=[g])
        per_graph += [(j + offsets[g], i + offsets[g], t)
                      for j, i, t in zip(*eg.edge_index.tolist(), eg.edge_type.tolist())]
    assert sorted(zip(ei[0].tolist(), ei[1].tolist(), e.edge_type.tolist())) == sorted(per_graph)


def test_torch_inputs_and_dtypes():
    pos, batch = _batch([20, 30], seed=5)
    e_np = GraphBuilder("radius:3+random:2")(pos, batch)
    e_t = GraphBuilder("radius:3+random:2")(torch.tensor(pos, dtype=torch.float64), torch.tensor(batch))
    assert e_t.edge_index.dtype == torch.long and e_t.edge_index.device.type == "cpu"
    assert torch.equal(e_np.edge_index, e_t.edge_index)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available on this machine")
def test_cuda_tensors_give_cuda_edges_equal_to_cpu():
    pos, batch = _batch([20, 30], seed=5)
    e_cpu = GraphBuilder("knn:5+random:2")(torch.tensor(pos), torch.tensor(batch))
    e_gpu = GraphBuilder("knn:5+random:2")(torch.tensor(pos).cuda(), torch.tensor(batch).cuda())
    assert e_gpu.edge_index.is_cuda and torch.equal(e_gpu.edge_index.cpu(), e_cpu.edge_index)


def test_composition_deduplicates_first_builder_wins():
    pos = _cloud(60, seed=6, scale=8)
    r = GraphBuilder("radius:3")(pos)
    both = GraphBuilder("radius:3+knn:6")(pos)
    knn = GraphBuilder("knn:6")(pos)
    union = set(_sorted_pairs(r.edge_index)) | set(_sorted_pairs(knn.edge_index))
    assert set(_sorted_pairs(both.edge_index)) == union and both.num_edges == len(union)
    types = dict(zip(zip(*both.edge_index.tolist()), both.edge_type.tolist()))
    assert all(types[p] == 0 for p in _sorted_pairs(r.edge_index))
    assert both.type_names == ("radius:3", "knn:6")


def test_self_loops_only_when_asked():
    pos = _cloud(10)
    e = GraphBuilder("radius:5", self_loops=True)(pos)
    loops = e.edge_index[0] == e.edge_index[1]
    assert loops.sum() == 10 and (e.edge_type[loops] == 1).all() and e.type_names[-1] == "self"


def test_random_exclude_existing_and_counts():
    pos = _cloud(80, seed=7, scale=15)
    gb = GraphBuilder("radius:4+random:5")
    e = gb(pos)
    ei, et = e.edge_index.numpy(), e.edge_type.numpy()
    rnd = ei[:, et == 1]
    assert (np.bincount(rnd[1], minlength=80) == 5).all()  # every node receives exactly 5
    radius = set(_sorted_pairs(ei[:, et == 0]))
    assert not radius & set(_sorted_pairs(rnd))
    out = GraphBuilder("random:5,dir=outgoing")(pos).edge_index.numpy()
    assert (np.bincount(out[0], minlength=80) == 5).all()  # every node sends exactly 5
    small = GraphBuilder("random:10")(pos[:4]).edge_index.numpy()  # fewer candidates than n
    assert small.shape[1] == 12


def test_random_reproducible_by_seed_and_key():
    pos = _cloud(100, seed=8, scale=20)
    a = GraphBuilder("random:5,seed=1")(pos).edge_index
    b = GraphBuilder("random:5,seed=1")(pos).edge_index
    c = GraphBuilder("random:5,seed=2")(pos).edge_index
    d = GraphBuilder("random:5,seed=1")(pos, graph_key=[17]).edge_index
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)


def _law_fit(law, temperature=1.0, n_points=1500, seeds=range(12)):
    """Fit log(selected / candidates) per distance bin, for n = 1 draws, on a uniform cloud."""
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 60, (n_points, 3))
    d_all = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    bins = np.linspace(2, 30, 15)
    cand = np.histogram(d_all[np.triu_indices(n_points, 1)], bins)[0] * 2.0
    sel = np.zeros(len(bins) - 1)
    for s in seeds:
        e = GraphBuilder([RandomLongRange(1, law=law, temperature=temperature, seed=s)])(pos).edge_index.numpy()
        sel += np.histogram(d_all[e[0], e[1]], bins)[0]
    mid = 0.5 * (bins[1:] + bins[:-1])
    ok = sel >= 20
    return mid[ok], np.log(sel[ok] / cand[ok]), sel.sum()


def test_random_inverse_cubic_law():
    mid, y, total = _law_fit("inverse_cubic")
    slope = np.polyfit(np.log(mid), y, 1)[0]
    assert abs(slope - (-3.0)) < 0.3, slope      # stated tolerance: +-0.3 on the log-log slope


def test_random_temperature_flattens_the_law():
    mid, y, _ = _law_fit("inverse_cubic", temperature=2.0)
    slope = np.polyfit(np.log(mid), y, 1)[0]
    assert abs(slope - (-1.5)) < 0.25, slope


def test_random_exponential_and_uniform_laws():
    mid, y, _ = _law_fit("exponential")
    slope = np.polyfit(mid, y, 1)[0]
    assert abs(slope - (-1 / 3)) < 0.05, slope   # log p = -d / 3
    mid, y, _ = _law_fit("uniform")
    slope = np.polyfit(mid, y, 1)[0]
    assert abs(slope) < 0.02, slope


@pytest.mark.parametrize("bad, msg", [
    ("cone:3", "unknown builder 'cone'"), ("radius", "needs a cutoff"), ("radius:-1", "must be > 0"),
    ("radius:4,maxx=3", "unknown option 'maxx'"), ("knn:x", "expected an integer"), ("random:5,law=cubic", "law must"),
    ("random:5,dir=up", "dir must"), ("radius:4+", "empty builder"), ("", "non-empty"), ("seq:0", "K >= 1"),
    ("radius:4,chain=maybe", "boolean"),
])
def test_spec_errors_name_the_problem(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_edge_spec(bad)


@pytest.mark.parametrize("spec", ["radius:4.5", "radius:4.5,max=32", "knn:30", "seq:2", "seq:offsets=-1/1/3", "full",
                                  "random:10", "random:40,law=exponential,T=0.5,exclude=0,dir=outgoing,seed=3",
                                  "radius:4.5,max=32+random:10", "knn:10,chain=1+full:chain=1"])
def test_spec_round_trip(spec):
    gb = parse_edge_spec(spec)
    assert parse_edge_spec(gb.spec()).builders == gb.builders
    assert gb.spec() == parse_edge_spec(gb.spec()).spec()


def test_within_chain_needs_chains():
    with pytest.raises(ConfigError, match="needs chain labels"):
        GraphBuilder("radius:3,chain=1")(_cloud(5))


def test_bad_positions_rejected():
    with pytest.raises(ConfigError, match="NaN"):
        GraphBuilder("radius:3")(np.array([[0, 0, np.nan], [1, 1, 1.0]]))
    with pytest.raises(ConfigError, match=r"shape \[N, 3\]"):
        GraphBuilder("radius:3")(np.zeros((4, 2)))
