"""Over-squashing diagnostics (farfield.diagnostics.graph_measures) against values computed by hand.

Notation: P_n path on n nodes, C_n cycle, S_n star with n leaves (n + 1 nodes), K_n complete graph.
Balanced Forman curvature (BFC) follows Topping et al., ICLR 2022, Definition 1:
Ric(i,j) = 2/d_i + 2/d_j - 2 + 2 t/d_max + t/d_min + (|#Sq_i| + |#Sq_j|) / (gamma_max d_max), 0 if d_min = 1.
"""
import json
import math

import numpy as np
import pytest
import torch

from farfield.diagnostics import graph_stats
from farfield.diagnostics.graph_measures import (
    CURVATURE_BINS, balanced_forman_curvature, dataset_graph_measures, effective_resistance, forman_curvature,
    graph_measures, shortest_path_stats, spectral_gap)


# --- graphs --------------------------------------------------------------------------------------------------
def path(n):
    a = np.arange(n - 1)
    return np.stack([a, a + 1])


def ring(n):
    a = np.arange(n)
    return np.stack([a, (a + 1) % n])


def star(n):                     # centre 0, leaves 1..n
    return np.stack([np.zeros(n, int), np.arange(1, n + 1)])


def complete(n):
    i, j = np.triu_indices(n, 1)
    return np.stack([i, j])


def union(*graphs):
    """Disjoint union of (edge_index, n) pairs."""
    parts, off = [], 0
    for e, n in graphs:
        parts.append(np.asarray(e) + off)
        off += n
    return np.concatenate(parts, axis=1), off


def random_graph(n, p, seed):
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(n, 1)
    keep = rng.random(len(i)) < p
    return np.stack([i[keep], j[keep]])


def by_edge(result):
    """{(i, j): curvature} of a per-edge result."""
    e = result["edges"]
    return {(int(a), int(b)): float(c) for a, b, c in zip(e[0], e[1], result["curvature"])}


# --- brute-force references ----------------------------------------------------------------------------------
def laplacian(edge_index, n):
    a = np.zeros((n, n))
    for u, v in np.asarray(edge_index).T:
        if u != v:
            a[u, v] = a[v, u] = 1.0
    return np.diag(a.sum(1)) - a, a


def bfc_reference(edge_index, n):
    """Definition 1 of Topping et al. (2022) with Python sets, one edge at a time."""
    nb = [set() for _ in range(n)]
    for u, v in np.asarray(edge_index).T:
        if u != v:
            nb[u].add(int(v))
            nb[v].add(int(u))
    out = {}
    for i in range(n):
        for j in sorted(nb[i]):
            if j <= i:
                continue
            di, dj = len(nb[i]), len(nb[j])
            if min(di, dj) == 1:
                out[(i, j)] = 0.0
                continue
            tri = len(nb[i] & nb[j])
            ball_i, ball_j = nb[i] | {i}, nb[j] | {j}
            per_k = {k: len((nb[k] & nb[j]) - ball_i) for k in nb[i] - ball_j}
            per_w = {w: len((nb[w] & nb[i]) - ball_j) for w in nb[j] - ball_i}
            sq_i = sum(c > 0 for c in per_k.values())
            sq_j = sum(c > 0 for c in per_w.values())
            ric = 2 / di + 2 / dj - 2 + 2 * tri / max(di, dj) + tri / min(di, dj)
            if sq_i + sq_j:
                gamma = max(list(per_k.values()) + list(per_w.values()))
                ric += (sq_i + sq_j) / (gamma * max(di, dj))
            out[(i, j)] = ric
    return out


# --- path, ring, star, complete graph ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_path(n):
    e = path(n)
    s = shortest_path_stats(e, n)
    # diameter n - 1; sum over ordered pairs of |i - j| = 2 * (n^3 - n)/6, over n(n-1) pairs -> (n + 1)/3
    assert s["diameter_hops"] == n - 1 and s["num_components"] == 1
    assert s["mean_shortest_path"] == pytest.approx((n + 1) / 3)
    assert s["disconnected_pair_fraction"] == 0.0 and s["num_edges"] == n - 1
    # series resistors: R_ij = |i - j|, total = sum_{i<j} (j - i) = (n^3 - n)/6, max = n - 1
    r = effective_resistance(e, n)
    assert r["connected"] and r["total"] == pytest.approx((n ** 3 - n) / 6)
    assert r["max"] == pytest.approx(n - 1)
    assert r["mean"] == pytest.approx(r["total"] / (n * (n - 1) / 2))
    # normalised Laplacian of P_n: eigenvalues 1 - cos(pi k/(n-1)), k = 0..n-1
    assert spectral_gap(e, n) == pytest.approx(1 - math.cos(math.pi / (n - 1)), abs=1e-10)
    # Forman 4 - d_i - d_j: end edges 4 - 1 - 2 = 1 (4 - 1 - 1 = 2 for P_2), inner edges 4 - 2 - 2 = 0
    f = forman_curvature(e, n)["curvature"]
    expect = np.zeros(n - 1)
    expect[[0, -1]] = 2.0 if n == 2 else 1.0
    np.testing.assert_allclose(f, expect)
    np.testing.assert_allclose(forman_curvature(e, n, augmented=False)["curvature"], expect)  # no triangles
    # BFC: end edges have a leaf (d_min = 1) -> 0; inner edges 2/2 + 2/2 - 2 = 0
    np.testing.assert_allclose(balanced_forman_curvature(e, n)["curvature"], 0.0)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 9])
def test_ring(n):
    e = ring(n)
    s = shortest_path_stats(e, n)
    # every node sees distances 1..m twice for n = 2m + 1: mean (m + 1)/2 = (n + 1)/4; for n = 2m: 1..m-1 twice
    # and m once: m^2/(2m - 1) = n^2/(4(n - 1))
    mean = (n + 1) / 4 if n % 2 else n ** 2 / (4 * (n - 1))
    assert s["diameter_hops"] == n // 2 and s["mean_shortest_path"] == pytest.approx(mean)
    # R at hop distance k: k(n - k)/n (parallel arcs); total = (1/2) sum_k k(n - k) = (n^3 - n)/12
    r = effective_resistance(e, n)
    assert r["total"] == pytest.approx((n ** 3 - n) / 12)
    assert r["max"] == pytest.approx((n // 2) * (n - n // 2) / n)
    # normalised Laplacian of C_n: 1 - cos(2 pi k/n)
    assert spectral_gap(e, n) == pytest.approx(1 - math.cos(2 * math.pi / n), abs=1e-10)
    # Forman 4 - 2 - 2 = 0; augmented adds 3 per triangle: only C_3 has one -> 3
    np.testing.assert_allclose(forman_curvature(e, n, augmented=False)["curvature"], 0.0)
    np.testing.assert_allclose(forman_curvature(e, n)["curvature"], 3.0 if n == 3 else 0.0)
    # BFC: C_3 = K_3: 1 + 1 - 2 + 2/2 + 1/2 = 3/2; C_4: degree part 0, #Sq_i = #Sq_j = 1 (the opposite
    # nodes), gamma_max = 1 -> (1 + 1)/(1 * 2) = 1; C_n, n >= 5: no triangles, no 4-cycles -> 0
    expect = {3: 1.5, 4: 1.0}.get(n, 0.0)
    np.testing.assert_allclose(balanced_forman_curvature(e, n)["curvature"], expect)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_star(n):
    e, nodes = star(n), n + 1
    s = shortest_path_stats(e, nodes)
    # ordered pairs: 2n centre-leaf at 1, n(n-1) leaf-leaf at 2 -> (2n + 2n(n-1))/(n(n+1)) = 2n/(n+1)
    assert s["diameter_hops"] == 2 and s["mean_shortest_path"] == pytest.approx(2 * n / (n + 1))
    # R: n centre-leaf pairs of 1, n(n-1)/2 leaf-leaf pairs of 2 -> n + n(n-1) = n^2; max 2
    r = effective_resistance(e, nodes)
    assert r["total"] == pytest.approx(n ** 2) and r["max"] == pytest.approx(2.0)
    # normalised Laplacian of a star: 0, 1 (n - 1 times), 2
    assert spectral_gap(e, nodes) == pytest.approx(1.0)
    # Forman 4 - n - 1 = 3 - n; BFC 0 (every edge has a leaf)
    np.testing.assert_allclose(forman_curvature(e, nodes)["curvature"], 3.0 - n)
    np.testing.assert_allclose(balanced_forman_curvature(e, nodes)["curvature"], 0.0)


@pytest.mark.parametrize("n", [3, 4, 6])
def test_complete(n):
    e = complete(n)
    s = shortest_path_stats(e, n)
    assert s["diameter_hops"] == 1 and s["mean_shortest_path"] == 1.0 and s["num_edges"] == n * (n - 1) // 2
    # L = nI - J: mu = n (n - 1 times) -> total n * (n - 1)/n = n - 1, R_uv = 2/n
    r = effective_resistance(e, n)
    assert r["total"] == pytest.approx(n - 1) and r["max"] == pytest.approx(2 / n)
    # A has eigenvalues n - 1, -1: normalised Laplacian 0 and 1 + 1/(n - 1) = n/(n - 1)
    assert spectral_gap(e, n) == pytest.approx(n / (n - 1))
    # Forman 4 - 2(n - 1); n - 2 triangles per edge -> augmented 4 - 2(n - 1) + 3(n - 2) = n
    f = forman_curvature(e, n)
    np.testing.assert_allclose(forman_curvature(e, n, augmented=False)["curvature"], 4 - 2 * (n - 1))
    np.testing.assert_allclose(f["curvature"], n)
    np.testing.assert_array_equal(f["triangles"], n - 2)
    # BFC: d = n - 1, t = n - 2, no 4-cycle without diagonals: 4/(n-1) - 2 + 3(n-2)/(n-1) = n/(n-1)
    b = balanced_forman_curvature(e, n)
    np.testing.assert_allclose(b["curvature"], n / (n - 1))
    np.testing.assert_array_equal(b["squares_i"] + b["squares_j"], 0)


# --- balanced Forman curvature: 4-cycles, diagonals, trees -----------------------------------------------
def test_bfc_complete_bipartite_k23_gamma_max():
    # K_{2,3}: a1 = 0, a2 = 1; b1..b3 = 2..4. Edge (a1, b1): d = 3, 2; no triangles.
    # #Sq_{a1} = {b2, b3} (each closes one 4-cycle a1-bk-a2-b1); #Sq_{b1} = {a2}, on which two 4-cycles
    # meet (via b2 and via b3) -> gamma_max = 2.
    # Ric = 2/3 + 2/2 - 2 + (2 + 1)/(2 * 3) = 1/6; every edge is equivalent.
    e = np.array([[0, 0, 0, 1, 1, 1], [2, 3, 4, 2, 3, 4]])
    b = balanced_forman_curvature(e, 5)
    np.testing.assert_allclose(b["curvature"], 1 / 6)
    np.testing.assert_array_equal(b["gamma_max"], 2)
    np.testing.assert_array_equal(b["squares_i"], 2)     # i = a-node (edges are (a, b) with a < b)
    np.testing.assert_array_equal(b["squares_j"], 1)


def test_bfc_diamond_excludes_triangle_diagonals():
    # C_4 0-1-2-3 plus the diagonal 0-2. Rim edge (0, 1): d = 3, 2, one triangle (via 2); the only candidate
    # k = 3 closes 0-3-w-1 only through w = 2, a neighbour of 0 (a diagonal): no 4-cycle.
    # Ric = 2/3 + 1 - 2 + 2/3 + 1/2 = 5/6. Diagonal (0, 2): d = 3, 3, two triangles: 4/3 - 2 + 4/3 + 2/3 = 4/3.
    e = np.array([[0, 1, 2, 3, 0], [1, 2, 3, 0, 2]])
    c = by_edge(balanced_forman_curvature(e, 4))
    assert c[(0, 2)] == pytest.approx(4 / 3)
    for edge in [(0, 1), (1, 2), (2, 3), (0, 3)]:
        assert c[edge] == pytest.approx(5 / 6)
    # augmented Forman: rim 4 - 3 - 2 + 3 = 2, diagonal 4 - 3 - 3 + 6 = 4
    f = by_edge(forman_curvature(e, 4))
    assert f[(0, 2)] == 4 and f[(0, 1)] == 2


def test_bfc_tree_is_nonpositive():
    # double star: centres 0 and 1 joined, each with two leaves. Centre edge: 2/3 + 2/3 - 2 = -2/3; leaf edges 0.
    e = np.array([[0, 0, 0, 1, 1], [1, 2, 3, 4, 5]])
    c = by_edge(balanced_forman_curvature(e, 6))
    assert c[(0, 1)] == pytest.approx(-2 / 3)
    assert all(v == 0.0 for k, v in c.items() if k != (0, 1))


def test_bfc_torus_grid_is_flat():
    # 5 x 5 torus: d = 4, no triangles; for a horizontal edge (i, j) the up/down neighbours of i each close
    # one diagonal-free 4-cycle with j (#Sq_i = #Sq_j = 2, gamma_max = 1): 1/2 + 1/2 - 2 + 4/(1 * 4) = 0.
    m = 5
    idx = np.arange(m * m).reshape(m, m)
    e = np.concatenate([np.stack([idx.ravel(), np.roll(idx, -1, 1).ravel()]),
                        np.stack([idx.ravel(), np.roll(idx, -1, 0).ravel()])], axis=1)
    b = balanced_forman_curvature(e, m * m)
    np.testing.assert_allclose(b["curvature"], 0.0, atol=1e-12)
    np.testing.assert_array_equal(b["squares_i"], 2)
    np.testing.assert_allclose(forman_curvature(e, m * m)["curvature"], -4.0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dense_limit", [0, 400])        # 0: the scipy.sparse path
def test_bfc_matches_definition_on_random_graphs(seed, dense_limit):
    n = 40
    e = random_graph(n, [0.08, 0.15, 0.3, 0.5][seed], seed)
    ref = bfc_reference(e, n)
    got = by_edge(balanced_forman_curvature(e, n, dense_limit=dense_limit, block=37))  # several blocks
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k


# --- disconnected graphs and isolated nodes ---------------------------------------------------------------
def test_disconnected_with_isolated_node():
    e, n = union((complete(3), 3), (complete(3), 3), (np.zeros((2, 0), int), 1))   # two triangles + node 6
    s = shortest_path_stats(e, n)
    # ordered pairs 7 * 6 = 42, connected 2 * (3 * 2) = 12 -> 30/42 disconnected
    assert s["num_components"] == 3 and s["largest_component"] == 3
    assert s["disconnected_pair_fraction"] == pytest.approx(30 / 42)
    assert s["diameter_hops"] == 1 and s["mean_shortest_path"] == 1.0
    r = effective_resistance(e, n)
    assert not r["connected"] and r["num_components"] == 3
    assert r["total"] == math.inf and r["max"] == math.inf and r["mean"] == math.inf
    # per triangle: total 3 - 1 = 2, R = 2/3
    assert r["total_within_components"] == pytest.approx(4.0)
    assert r["max_within_components"] == pytest.approx(2 / 3)
    assert r["mean_within_components"] == pytest.approx(4 / 6) and r["num_pairs_within_components"] == 6
    assert spectral_gap(e, n) == 0.0
    # curvature is local: each triangle edge as in K_3
    np.testing.assert_allclose(balanced_forman_curvature(e, n)["curvature"], 1.5)


def test_isolated_node_and_tiny_graphs():
    e, n = union((complete(4), 4), (np.zeros((2, 0), int), 1))      # K_4 + an isolated node
    assert spectral_gap(e, n) == 0.0                                  # L_ii = 0 for the isolated node
    assert shortest_path_stats(e, n)["num_components"] == 2
    assert effective_resistance(e, n)["total_within_components"] == pytest.approx(3.0)
    one = np.zeros((2, 0), int)
    assert spectral_gap(one, 1) is None
    r = effective_resistance(one, 1)
    assert r["connected"] and r["total"] == 0.0 and r["max"] is None and r["mean"] is None
    s = shortest_path_stats(one, 1)
    assert s["mean_shortest_path"] is None and s["disconnected_pair_fraction"] is None
    s = shortest_path_stats(one, 3)                                   # three isolated nodes
    assert s["num_components"] == 3 and s["disconnected_pair_fraction"] == 1.0 and s["diameter_hops"] == 0
    assert forman_curvature(one, 3)["curvature"].shape == (0,)
    assert balanced_forman_curvature(one, 3)["edges"].shape == (2, 0)
    assert spectral_gap(np.array([[0], [1]]), 2) == pytest.approx(2.0)  # K_2: n/(n-1) = 2


# --- input conventions -------------------------------------------------------------------------------------
def test_duplicates_reversed_edges_and_self_loops_do_not_matter():
    n = 30
    e = random_graph(n, 0.2, 7)
    noisy = np.concatenate([e, e[::-1], e[:, :10], np.stack([np.arange(5), np.arange(5)])], axis=1)
    noisy = noisy[:, np.random.default_rng(0).permutation(noisy.shape[1])]
    assert shortest_path_stats(noisy, n) == shortest_path_stats(e, n)
    assert effective_resistance(noisy, n) == pytest.approx(effective_resistance(e, n))
    assert spectral_gap(noisy, n) == pytest.approx(spectral_gap(e, n))
    for f in (forman_curvature, balanced_forman_curvature):
        a, b = f(noisy, n), f(e, n)
        np.testing.assert_array_equal(a["edges"], b["edges"])
        np.testing.assert_allclose(a["curvature"], b["curvature"])
    # torch input
    np.testing.assert_allclose(balanced_forman_curvature(torch.as_tensor(noisy), n)["curvature"],
                               balanced_forman_curvature(e, n)["curvature"])
    with pytest.raises(ValueError):
        forman_curvature(np.array([[0], [n]]), n)


# --- effective resistance against the pseudoinverse, large-graph paths -------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_effective_resistance_matches_pinv(seed):
    n = 25
    rng = np.random.default_rng(seed)
    e = np.concatenate([path(n)[:, rng.permutation(n - 1)], random_graph(n, 0.15, seed)], axis=1)  # connected
    perm = rng.permutation(n)
    e = perm[e]
    lap, _ = laplacian(e, n)
    lp = np.linalg.pinv(lap)
    d = np.diag(lp)
    r = d[:, None] + d[None, :] - 2 * lp                                # R_uv = (e_u - e_v)^T L^+ (e_u - e_v)
    iu = np.triu_indices(n, 1)
    got = effective_resistance(e, n)
    assert got["total"] == pytest.approx(r[iu].sum(), rel=1e-9)
    assert got["max"] == pytest.approx(r.max(), rel=1e-9)
    assert got["mean"] == pytest.approx(r[iu].mean(), rel=1e-9)
    # the same per component once a second copy is added (total / max within components)
    e2, n2 = union((e, n), (e, n))
    got2 = effective_resistance(e2, n2)
    assert got2["total"] == math.inf
    assert got2["total_within_components"] == pytest.approx(2 * r[iu].sum(), rel=1e-9)
    assert got2["max_within_components"] == pytest.approx(r.max(), rel=1e-9)


def test_large_graph_paths():
    n = 60
    e = np.concatenate([ring(n), random_graph(n, 0.05, 3)], axis=1)
    # sparse shift-invert Lanczos agrees with the dense eigensolver
    assert spectral_gap(e, n, dense_limit=10) == pytest.approx(spectral_gap(e, n), rel=1e-8)
    assert spectral_gap(ring(n), n, dense_limit=10) == pytest.approx(1 - math.cos(2 * math.pi / n), rel=1e-8)
    # effective resistance refuses components above dense_limit
    with pytest.raises(ValueError, match="dense_limit"):
        effective_resistance(e, n, dense_limit=50)
    # sampled BFS: diameter a lower bound
    exact = shortest_path_stats(path(n), n)
    sampled = shortest_path_stats(path(n), n, exact_limit=10, sample_sources=8)
    assert not sampled["exact"] and exact["exact"]
    assert sampled["diameter_hops"] <= exact["diameter_hops"] == n - 1
    assert sampled["num_components"] == 1


# --- one graph, and a data set -----------------------------------------------------------------------------
def test_graph_measures_combines_everything():
    n = 12
    pos = np.stack([np.arange(n) * 1.5, np.zeros(n), np.zeros(n)], 1)      # a chain 1.5 A apart
    e = path(n)
    g = graph_measures(e, pos, cutoff=4.0, max_hops=3)
    json.dumps(g, allow_nan=False)
    assert g["num_nodes"] == n and g["num_edges"] == n - 1
    assert g["shortest_paths"] == shortest_path_stats(e, n)
    assert g["effective_resistance"]["total"] == pytest.approx((n ** 3 - n) / 6)
    assert g["spectral_gap"] == pytest.approx(1 - math.cos(math.pi / (n - 1)))
    assert g["curvature"]["forman"]["min"] == 0.0 and g["curvature"]["forman"]["max"] == 1.0
    assert g["curvature"]["balanced_forman"]["mean"] == 0.0
    assert g["reachability"] == graph_stats.hop_reachability(e, pos, 4.0, 3)
    # pairs > 4 A apart are >= 3 hops apart: none within 1 or 2 hops, those at exactly 3 hops within 3
    assert g["reachability"]["reachable_within"]["2"] == 0.0 and g["reachability"]["reachable_within"]["3"] > 0
    # disconnected: infinite resistances become None (JSON-safe), the flag says why
    e2, n2 = union((e, n), (complete(3), 3))
    pos2 = np.concatenate([pos, np.eye(3) * 100.0])
    g2 = graph_measures(e2, pos2, cutoff=4.0, max_hops=3, return_arrays=True)
    er = g2["effective_resistance"]
    assert er["total"] is None and er["max"] is None and not er["connected"]
    assert er["total_within_components"] == pytest.approx((n ** 3 - n) / 6 + 2)
    assert g2["spectral_gap"] == 0.0
    pe = g2["per_edge"]
    np.testing.assert_allclose(pe["forman_augmented"], forman_curvature(e2, n2)["curvature"])
    np.testing.assert_allclose(pe["forman"], forman_curvature(e2, n2, augmented=False)["curvature"])
    np.testing.assert_allclose(pe["balanced_forman"], balanced_forman_curvature(e2, n2)["curvature"])
    skipped = graph_measures(e, pos, cutoff=4.0, max_hops=3, dense_limit=5)
    assert "skipped" in skipped["effective_resistance"]


def test_dataset_graph_measures():
    from torch_geometric.data import Data

    def data(e, n, seed):
        pos = torch.as_tensor(np.random.default_rng(seed).uniform(0, 10, (n, 3)), dtype=torch.float32)
        return Data(edge_index=torch.as_tensor(np.asarray(e), dtype=torch.long), pos=pos, num_nodes=n)

    e_dis, n_dis = union((ring(5), 5), (complete(3), 3))
    graphs = [data(complete(5), 5, 0), data(ring(6), 6, 1), data(star(4), 5, 2), data(e_dis, n_dis, 3)]
    r = dataset_graph_measures(graphs, cutoff=3.0, max_hops=2, progress=False)
    json.dumps(r, allow_nan=False)
    assert r["graphs"] == 4 and r["disconnected_graphs"] == 1 and r["effective_resistance_skipped"] == 0
    d = r["distributions"]
    assert d["num_nodes"]["count"] == 4 and d["num_nodes"]["mean"] == pytest.approx((5 + 6 + 5 + 8) / 4)
    # K_5: 4, C_6: 35/2, S_4: 16; the disconnected graph is missing
    tot = d["effective_resistance_total"]
    assert tot["count"] == 3 and tot["missing"] == 1
    assert tot["mean"] == pytest.approx((4 + 35 / 2 + 16) / 3)
    assert tot["max"] == pytest.approx(17.5) and tot["min"] == pytest.approx(4.0)
    assert d["spectral_gap"]["min"] == 0.0 and d["spectral_gap"]["max"] == pytest.approx(5 / 4)
    assert set(d) >= {"reachable_within_1", "reachable_within_2", "balanced_forman_min", "diameter_hops"}
    edges = 10 + 6 + 4 + 8
    for name, h in r["curvature_histograms"].items():
        assert h["total"] == edges and sum(h["counts"]) + h["below"] + h["above"] == edges
        assert len(h["counts"]) == len(CURVATURE_BINS[name]) - 1
    # BFC values: 10 x 5/4, 6 x 0, 4 x 0 (star), 5 x 0 + 3 x 3/2
    bf = r["curvature_histograms"]["balanced_forman"]
    be = np.array(bf["bin_edges"])
    assert bf["counts"][int(np.searchsorted(be, 1.25, side="right")) - 1] == 10
    assert bf["counts"][int(np.searchsorted(be, 0.0, side="right")) - 1] == 15
    first = dataset_graph_measures(iter(graphs), cutoff=3.0, max_hops=2, progress=False, max_graphs=2)
    assert first["graphs"] == 2 and first["distributions"]["num_nodes"]["max"] == 6
