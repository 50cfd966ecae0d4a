"""Over-squashing diagnostics of a graph's topology: shortest paths, effective resistance, spectral gap and
edge curvatures (Forman, augmented Forman, balanced Forman), per graph and pooled over a data set.

Conventions shared by every function here: ``edge_index`` is a ``[2, E]`` integer array (NumPy or torch) of
directed edges over nodes ``0 .. num_nodes - 1``. It is read as a *simple undirected* graph: an edge in
either direction makes the pair adjacent, self loops are dropped and duplicates collapse. Per-edge results
refer to the undirected edges ``(i, j)`` with ``i < j``, sorted lexicographically (key ``"edges"``, ``[2, m]``).

Measures (all on the unweighted simple graph; d_i is the degree of node i, A the adjacency matrix):

* Shortest paths: hop diameter, mean hop distance, connected components (Alon & Yahav, ICLR 2021, relate
  over-squashing to the problem radius; Topping et al., ICLR 2022, to the growth of the r-hop neighbourhood).
* Effective resistance R_uv = (e_u - e_v)^T L^+ (e_u - e_v), with L = D - A the combinatorial Laplacian, and
  the total resistance (Kirchhoff index) sum_{u<v} R_uv = n * sum_{i>=2} 1 / mu_i over the non-zero Laplacian
  eigenvalues mu_2 <= ... <= mu_n of a connected graph (Klein & Randic, J. Math. Chem. 1993; Gutman & Mohar,
  J. Chem. Inf. Comput. Sci. 1996; Ellens, Spieksma, Van Mieghem, Jamakovic & Kooij, Linear Algebra Appl.
  2011, "Effective graph resistance"). Black, Wan, Nayyeri & Wang (ICML 2023, "Understanding oversquashing
  in GNNs through the lens of effective resistance") bound the Jacobian of an MPNN by R_uv and use the
  total resistance as a global over-squashing measure.
* Spectral gap lambda_1 of the symmetric normalised Laplacian I - D^-1/2 A D^-1/2 (Chung, "Spectral Graph
  Theory", 1997, Chapter 1); by Cheeger's inequality 2 h_G >= lambda_1 >= h_G^2 / 2 a small gap means a
  bottleneck (Topping et al., ICLR 2022, and the rewiring methods that enlarge the gap).
* Forman curvature F(i, j) = 4 - d_i - d_j of an unweighted edge (Sreejith, Mohanraj, Jost, Saucan & Samal,
  J. Stat. Mech. 2016, "Forman curvature for complex networks", Forman's formula with unit weights), and the
  augmented Forman curvature F#(i, j) = 4 - d_i - d_j + 3 |triangles(i, j)| that fills triangles in as 2-cells
  (Samal, Sreejith, Gu, Liu, Saucan & Jost, Sci. Rep. 2018; Topping et al., ICLR 2022).
* Balanced Forman curvature Ric(i, j), Topping, Di Giovanni, Chamberlain, Dong & Bronstein, ICLR 2022,
  "Understanding over-squashing and bottlenecks on graphs via curvature", Definition 1 (see
  :func:`balanced_forman_curvature`).

Large graphs are handled with ``scipy.sparse`` (BFS, curvature, shortest-path components, shift-invert
Lanczos for the spectral gap); small ones with dense NumPy where that is faster. The effective resistance
needs a dense eigendecomposition per connected component and refuses components above ``dense_limit``.
"""
from __future__ import annotations

import math
import time
from itertools import islice

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, shortest_path
from scipy.sparse.linalg import eigsh

from farfield.diagnostics.graph_stats import hop_reachability

__all__ = ["shortest_path_stats", "effective_resistance", "spectral_gap", "forman_curvature",
           "balanced_forman_curvature", "graph_measures", "dataset_graph_measures", "CURVATURE_BINS"]

#: Fixed histogram bin edges of the pooled curvature histograms of :func:`dataset_graph_measures`. Forman
#: curvatures are integers: unit bins centred on -150 .. 150. Balanced Forman curvature (Topping et al. 2022,
#: Definition 1) lies in (-2, 3/2]: the degree part 2/d_i + 2/d_j - 2 is > -2 and the other terms are >= 0;
#: with |#Tri| <= d_min - 1, |#Sq_i| + |#Sq_j| <= d_i + d_j - 2 - 2 |#Tri| and gamma_max >= 1 the sum is
#: <= (2 + |#Tri|)/d_min <= 1 + 1/d_min <= 3/2 (K_3). Bins of width 0.05 on [-2, 2]. Values outside
#: the bins count as ``below`` / ``above``.
CURVATURE_BINS = {
    "forman": np.arange(-150.5, 151.0, 1.0),
    "forman_augmented": np.arange(-150.5, 151.0, 1.0),
    "balanced_forman": np.linspace(-2.0, 2.0, 81),
}

_QUANTILES = (("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95))


# -- the simple undirected graph -----------------------------------------------------------------------------
def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _simple_graph(edge_index, num_nodes: int):
    """(A, edges): the symmetric 0/1 CSR adjacency [n, n] (float64, no self loops, no duplicates) and the
    undirected edges [2, m] (i < j, lexicographically sorted)."""
    n = int(num_nodes)
    if n < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    ei = _to_numpy(edge_index)
    if ei.size == 0:
        ei = np.zeros((2, 0), dtype=np.int64)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(ei.shape)}")
    ei = ei.astype(np.int64, copy=False)
    if ei.shape[1] and (ei.min() < 0 or ei.max() >= n):
        raise ValueError(f"edge_index refers to node {int(ei.max()) if ei.max() >= n else int(ei.min())}, "
                         f"outside 0..{n - 1}")
    ei = ei[:, ei[0] != ei[1]]
    lo, hi = np.minimum(ei[0], ei[1]), np.maximum(ei[0], ei[1])
    key = np.unique(lo * n + hi)
    i, j = key // n, key % n
    a = sp.csr_matrix((np.ones(2 * len(key)), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(n, n))
    a.sort_indices()
    return a, np.stack([i, j]).astype(np.int64)


def _degrees(a) -> np.ndarray:
    return np.diff(a.indptr).astype(np.int64)


class _Graph:
    """The simple undirected graph of an edge_index, prepared once: adjacency, edges, degrees, components."""

    def __init__(self, edge_index, num_nodes: int):
        self.a, self.edges = _simple_graph(edge_index, num_nodes)
        self.n = self.a.shape[0]
        self.deg = _degrees(self.a)
        if self.n:
            self.ncomp, self.labels = connected_components(self.a, directed=False)
            self.sizes = np.bincount(self.labels)
        else:
            self.ncomp, self.labels, self.sizes = 0, np.zeros(0, np.int64), np.zeros(0, np.int64)


def _graph(edge_index, num_nodes) -> _Graph:
    return edge_index if isinstance(edge_index, _Graph) else _Graph(edge_index, num_nodes)


# -- shortest paths ------------------------------------------------------------------------------------------
def shortest_path_stats(edge_index, num_nodes: int, exact_limit: int = 4000, sample_sources: int = 512,
                        seed: int = 0) -> dict:
    """Hop-distance statistics of the undirected graph (BFS from every node, ``scipy.sparse.csgraph``).

    Returns a dict with keys

    * ``num_nodes``, ``num_edges`` (undirected, after dropping self loops and duplicates);
    * ``diameter_hops``: the largest *finite* hop distance (0 without edges);
    * ``mean_shortest_path``: the mean hop distance over ordered pairs (i, j), i != j, in the same connected
      component (``None`` when there is no such pair);
    * ``num_components`` (an isolated node is a component), ``largest_component`` (nodes);
    * ``disconnected_pair_fraction``: the fraction of ordered pairs i != j in different components (exact,
      from the components; ``None`` for fewer than two nodes);
    * ``exact``: True when BFS ran from every node. Above ``exact_limit`` nodes it runs from a seeded random
      sample of ``sample_sources`` nodes, the mean is then a sample estimate and the diameter a lower bound.
    """
    g = _graph(edge_index, num_nodes)
    a, n, ncomp, sizes = g.a, g.n, g.ncomp, g.sizes
    out = {"num_nodes": int(n), "num_edges": int(g.edges.shape[1]), "diameter_hops": 0, "mean_shortest_path": None,
           "num_components": 0, "largest_component": 0, "disconnected_pair_fraction": None, "exact": True}
    if n == 0:
        return out
    out["num_components"], out["largest_component"] = int(ncomp), int(sizes.max())
    pairs = n * (n - 1)
    connected_pairs = int((sizes * (sizes - 1)).sum())
    if pairs:
        out["disconnected_pair_fraction"] = float(1.0 - connected_pairs / pairs)
    if connected_pairs == 0:
        return out
    exact = n <= exact_limit
    sources = np.arange(n) if exact else np.sort(np.random.default_rng(seed).choice(n, sample_sources, replace=False))
    total, count, diameter = 0.0, 0, 0
    for c0 in range(0, len(sources), 256):
        src = sources[c0:c0 + 256]
        hops = shortest_path(a, method="D", directed=False, unweighted=True, indices=src)
        finite = np.isfinite(hops)
        h = np.where(finite, hops, 0.0)
        total += float(h.sum())
        count += int(finite.sum()) - len(src)            # minus the zero distance of each source to itself
        diameter = max(diameter, int(h.max()))
    out.update(diameter_hops=int(diameter), mean_shortest_path=float(total / count) if count else None,
               exact=bool(exact))
    return out


# -- effective resistance -------------------------------------------------------------------------------------
def effective_resistance(edge_index, num_nodes: int, dense_limit: int = 3000) -> dict:
    """Effective resistances R_uv = (e_u - e_v)^T L^+ (e_u - e_v) of the unweighted graph with unit
    conductances (Klein & Randic 1993), summarised; Black et al. (ICML 2023) use them as over-squashing measures.

    Computed per connected component C (n_C >= 2 nodes) from the dense eigendecomposition L_C = V diag(mu) V^T
    of its combinatorial Laplacian: L_C^+ = sum_{i>=2} v_i v_i^T / mu_i and the component's total resistance
    sum_{u<v in C} R_uv = n_C * sum_{i>=2} 1 / mu_i (Gutman & Mohar 1996; Ellens et al. 2011).
    Pairs in different components have R_uv = inf (no current can flow), so for a disconnected graph ``total``,
    ``max`` and ``mean`` are ``inf`` and the ``*_within_components`` keys give the finite parts.

    Returns a dict with keys

    * ``connected`` (bool: at most one component), ``num_components``;
    * ``total``: sum over unordered pairs u < v of R_uv (0.0 for fewer than two nodes; inf if disconnected);
    * ``max``: max over pairs (``None`` for fewer than two nodes; inf if disconnected);
    * ``mean``: ``total`` / (n (n - 1) / 2) (``None`` for fewer than two nodes; inf if disconnected);
    * ``total_within_components``, ``max_within_components``, ``mean_within_components``: the same over the
      pairs in a common component (max / mean ``None`` when there is no such pair);
    * ``num_pairs``, ``num_pairs_within_components``.

    Raises ``ValueError`` when a connected component has more than ``dense_limit`` nodes (the dense
    eigendecomposition costs O(n_C^3) time and O(n_C^2) memory); no sampled estimate is attempted.
    """
    g = _graph(edge_index, num_nodes)
    a, n = g.a, g.n
    num_pairs = n * (n - 1) // 2
    if n == 0:
        return {"connected": True, "num_components": 0, "total": 0.0, "max": None, "mean": None,
                "total_within_components": 0.0, "max_within_components": None, "mean_within_components": None,
                "num_pairs": 0, "num_pairs_within_components": 0}
    ncomp, labels, sizes = g.ncomp, g.labels, g.sizes
    if sizes.max() > dense_limit:
        raise ValueError(f"effective_resistance: a connected component has {int(sizes.max())} nodes, more than "
                         f"dense_limit={dense_limit} (dense eigendecomposition); raise dense_limit to compute it")
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    total, rmax, within = 0.0, None, 0
    for c in np.flatnonzero(sizes >= 2):
        nodes = order[bounds[c]:bounds[c + 1]]
        sub = a[nodes][:, nodes].toarray()
        lap = np.diag(sub.sum(1)) - sub
        mu, v = np.linalg.eigh(lap)
        mu, v = mu[1:], v[:, 1:]                      # drop the zero eigenvalue (constant vector) of C
        m_c = len(nodes)
        total += float(m_c * np.sum(1.0 / mu))
        lp = (v / mu) @ v.T
        dg = np.diag(lp)
        r = dg[:, None] + dg[None, :] - 2.0 * lp
        rmax = max(rmax or 0.0, float(r.max()))
        within += m_c * (m_c - 1) // 2
    connected = ncomp <= 1
    out = {"connected": bool(connected), "num_components": int(ncomp),
           "total_within_components": total, "max_within_components": rmax,
           "mean_within_components": total / within if within else None,
           "num_pairs": int(num_pairs), "num_pairs_within_components": int(within)}
    if connected:
        out.update(total=total, max=rmax, mean=total / num_pairs if num_pairs else None)
    else:
        out.update(total=math.inf, max=math.inf, mean=math.inf)
    return out


# -- spectral gap ---------------------------------------------------------------------------------------------
def spectral_gap(edge_index, num_nodes: int, dense_limit: int = 1000) -> float | None:
    """Second-smallest eigenvalue lambda_1 of the symmetric normalised Laplacian I - D^-1/2 A D^-1/2
    (Chung 1997, Chapter 1), in [0, 2].

    Isolated nodes: Chung's convention L_ii = 0 for d_i = 0 gives each isolated node its own zero eigenvalue,
    so a graph with an isolated node and n >= 2 nodes - like every disconnected graph (one zero eigenvalue per
    component) - has gap 0.0; this is returned without an eigensolve. ``None`` for fewer than two nodes.
    Connected graphs: dense ``numpy.linalg.eigvalsh`` up to ``dense_limit`` nodes, otherwise sparse
    shift-invert Lanczos (``scipy.sparse.linalg.eigsh``, the two eigenvalues nearest -0.01).
    """
    g = _graph(edge_index, num_nodes)
    a, n = g.a, g.n
    if n < 2:
        return None
    if g.ncomp > 1:
        return 0.0
    inv_sqrt = 1.0 / np.sqrt(g.deg.astype(np.float64))
    if n <= dense_limit:
        lap = np.eye(n) - inv_sqrt[:, None] * a.toarray() * inv_sqrt[None, :]
        lam = np.linalg.eigvalsh(lap)
    else:
        s = sp.diags(inv_sqrt)
        lap = (sp.identity(n, format="csr") - s @ a @ s).tocsc()
        lam = np.sort(eigsh(lap, k=2, sigma=-0.01, which="LM", return_eigenvectors=False))
    return float(min(max(lam[1], 0.0), 2.0))


# -- curvature ------------------------------------------------------------------------------------------------
def _triangles(a, i, j) -> np.ndarray:
    """Number of common neighbours of each edge (i_e, j_e): the triangles through the edge, (A^2)_ij."""
    return np.asarray(a[i].multiply(a[j]).sum(axis=1)).ravel().astype(np.int64)


def forman_curvature(edge_index, num_nodes: int, augmented: bool = True) -> dict:
    """Forman curvature of each undirected edge of the unweighted graph:
    F(i, j) = 4 - d_i - d_j (Sreejith et al., J. Stat. Mech. 2016, Forman's edge curvature with unit weights),
    and with ``augmented`` the triangles through the edge filled in as 2-cells,
    F#(i, j) = 4 - d_i - d_j + 3 |triangles(i, j)| (Samal et al., Sci. Rep. 2018; Topping et al., ICLR 2022).

    Returns ``{"edges": [2, m] int64 (i < j), "curvature": [m] float64, "triangles": [m] int64,
    "augmented": bool}``.
    """
    g = _graph(edge_index, num_nodes)
    a, edges, d = g.a, g.edges, g.deg
    i, j = edges
    tri = _triangles(a, i, j)
    curv = (4 - d[i] - d[j]).astype(np.float64)
    if augmented:
        curv += 3.0 * tri
    return {"edges": edges, "curvature": curv, "triangles": tri, "augmented": bool(augmented)}


def balanced_forman_curvature(edge_index, num_nodes: int, block: int = 4096, dense_limit: int = 400) -> dict:
    """Balanced Forman curvature of each undirected edge, Topping, Di Giovanni, Chamberlain, Dong & Bronstein,
    ICLR 2022, "Understanding over-squashing and bottlenecks on graphs via curvature", Definition 1.

    With S_1(i) the neighbours of i, B_1(i) = S_1(i) + {i}, d_max / d_min the larger / smaller of d_i, d_j:
    Ric(i, j) = 0 if min(d_i, d_j) = 1, and otherwise ::

        Ric(i, j) = 2/d_i + 2/d_j - 2 + 2 |#Tri| / d_max + |#Tri| / d_min
                    + (|#Sq_i| + |#Sq_j|) / (gamma_max * d_max)

    * #Tri(i, j) = S_1(i) & S_1(j): the triangles through the edge, (A^2)_ij.
    * #Sq_i(i, j) = {k in S_1(i) - B_1(j) : some w in (S_1(k) & S_1(j)) - B_1(i)}: the neighbours k of i
      that start a 4-cycle i ~ k ~ w ~ j ~ i *without diagonals* (k not adjacent to j, w not adjacent to i,
      so a 4-cycle that is two triangles glued along a diagonal does not count); #Sq_j symmetrically
      (k in S_1(j) - B_1(i) with some w in (S_1(k) & S_1(i)) - B_1(j)). One is empty iff the other is.
    * gamma_max(i, j): the largest number of such 4-cycles through one node, i.e. the maximum, over
      k in #Sq_i, of |(S_1(k) & S_1(j)) - B_1(i)| = A_k . (A_j - A_i * A_j) - 1, and over w in #Sq_j of the
      symmetric count A_w . (A_i - A_j * A_i) - 1 (Topping et al., Definition 1 and its remark).
    * The 4-cycle term is 0 when #Sq_i (hence #Sq_j) is empty (gamma_max = 0).

    Values derived from the definition: K_n (n >= 3) n/(n-1); C_3 3/2, C_4 1, C_n (n >= 5) 0; trees
    2/d_i + 2/d_j - 2 <= 0 on edges between inner nodes and 0 on edges to a leaf; the infinite grid (or an
    m x m torus, m >= 5) 0.

    Vectorised over blocks of ``block`` edges (bounding memory): W = rows A_j - A_i * A_j with the entry of i
    removed (the candidate w's), K = rows A_i - A_i * A_j with the entry of j removed (the candidate k's);
    (W @ A) * K counts, for every candidate k, its w's, and (K @ A) * W the k's of every w. Dense matrices
    up to ``dense_limit`` nodes, scipy.sparse above (O(sum over edges of d_k d_w) time).

    Returns ``{"edges": [2, m] int64 (i < j), "curvature": [m] float64, "triangles": [m] int64,
    "squares_i": [m] int64, "squares_j": [m] int64, "gamma_max": [m] int64}`` (``squares_i`` / ``squares_j``
    are |#Sq_i| / |#Sq_j| for i = edges[0], j = edges[1]).
    """
    g = _graph(edge_index, num_nodes)
    a, edges, n, d = g.a, g.edges, g.n, g.deg
    m = edges.shape[1]
    tri = np.zeros(m, np.int64)
    sq_i = np.zeros(m, np.int64)
    sq_j = np.zeros(m, np.int64)
    gamma = np.zeros(m, np.int64)
    dense = n <= dense_limit
    ad = a.toarray() if dense and m else None
    for s0 in range(0, m, block):
        i, j = edges[0, s0:s0 + block], edges[1, s0:s0 + block]
        b, sl, rows = len(i), slice(s0, s0 + len(i)), np.arange(len(i))
        if dense:
            ri, rj = ad[i], ad[j]
            common = ri * rj
            w_cand = rj - common                      # w in S_1(j) - B_1(i)
            w_cand[rows, i] = 0.0
            k_cand = ri - common                      # k in S_1(i) - B_1(j)
            k_cand[rows, j] = 0.0
            per_k = (w_cand @ ad) * k_cand            # [b, n]: for each k, the number of its w's
            per_w = (k_cand @ ad) * w_cand            # [b, n]: for each w, the number of its k's
            tri[sl] = common.sum(axis=1)
            sq_i[sl] = (per_k > 0).sum(axis=1)
            sq_j[sl] = (per_w > 0).sum(axis=1)
            gamma[sl] = np.maximum(per_k.max(axis=1), per_w.max(axis=1))
            continue
        ri, rj = a[i], a[j]
        common = ri.multiply(rj).tocsr()
        e_i = sp.csr_matrix((np.ones(b), (rows, i)), shape=(b, n))
        e_j = sp.csr_matrix((np.ones(b), (rows, j)), shape=(b, n))
        w_cand = (rj - common - e_i).tocsr()
        k_cand = (ri - common - e_j).tocsr()
        w_cand.eliminate_zeros()
        k_cand.eliminate_zeros()
        per_k = (w_cand @ a).multiply(k_cand).tocsr()
        per_w = (k_cand @ a).multiply(w_cand).tocsr()
        per_k.eliminate_zeros()
        per_w.eliminate_zeros()
        tri[sl] = np.asarray(common.sum(axis=1)).ravel()
        sq_i[sl] = np.diff(per_k.indptr)
        sq_j[sl] = np.diff(per_w.indptr)
        gk = per_k.max(axis=1).toarray().ravel() if per_k.nnz else np.zeros(b)
        gw = per_w.max(axis=1).toarray().ravel() if per_w.nnz else np.zeros(b)
        gamma[sl] = np.maximum(gk, gw)
    di, dj = d[edges[0]].astype(np.float64), d[edges[1]].astype(np.float64)
    dmax, dmin = np.maximum(di, dj), np.minimum(di, dj)
    with np.errstate(divide="ignore", invalid="ignore"):
        curv = 2.0 / di + 2.0 / dj - 2.0 + 2.0 * tri / dmax + tri / dmin
        sq = sq_i + sq_j
        curv = np.where(sq > 0, curv + sq / (np.maximum(gamma, 1) * dmax), curv)
    curv = np.where(dmin <= 1, 0.0, curv)
    return {"edges": edges, "curvature": curv.astype(np.float64), "triangles": tri, "squares_i": sq_i,
            "squares_j": sq_j, "gamma_max": gamma}


# -- one graph, and a data set --------------------------------------------------------------------------------
def _finite_or_none(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _edge_summary(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"count": 0, "mean": None, "min": None, "max": None, "fraction_negative": None}
    return {"count": int(len(values)), "mean": float(values.mean()), "min": float(values.min()),
            "max": float(values.max()), "fraction_negative": float((values < 0).mean())}


def graph_measures(edge_index, pos, cutoff: float, max_hops: int, num_nodes: int | None = None,
                   dense_limit: int = 3000, return_arrays: bool = False) -> dict:
    """All the over-squashing diagnostics of one graph (``pos`` [n, 3]; ``num_nodes`` defaults to len(pos)).

    Returns a JSON-safe dict (plain floats / ints / None; inf becomes None, with the ``connected`` flags
    telling why):

    * ``num_nodes``, ``num_edges`` (undirected, simple), ``mean_degree``;
    * ``shortest_paths``: :func:`shortest_path_stats`;
    * ``effective_resistance``: :func:`effective_resistance` (``total`` / ``max`` / ``mean`` None when
      disconnected); ``{"skipped": reason}`` when a component exceeds ``dense_limit`` nodes;
    * ``spectral_gap``: :func:`spectral_gap`;
    * ``curvature``: ``forman``, ``forman_augmented``, ``balanced_forman``, each ``{count, mean, min, max,
      fraction_negative}`` over the undirected edges;
    * ``reachability``: :func:`farfield.diagnostics.graph_stats.hop_reachability` (pairs farther than
      ``cutoff`` reachable within L = 1 .. ``max_hops`` hops); ``{}`` when ``pos`` is None.

    With ``return_arrays`` also ``per_edge``: ``{"edges": [2, m], "forman", "forman_augmented",
    "balanced_forman": [m] arrays}`` (NumPy; not JSON-safe).
    """
    p = None if pos is None else np.asarray(_to_numpy(pos), dtype=np.float64)
    n = int(num_nodes) if num_nodes is not None else (len(p) if p is not None else None)
    if n is None:
        raise ValueError("graph_measures: give pos or num_nodes")
    g = _Graph(edge_index, n)
    sps = shortest_path_stats(g, n)
    try:
        er = {k: (_finite_or_none(v) if isinstance(v, float) else v)
              for k, v in effective_resistance(g, n, dense_limit).items()}
    except ValueError as err:
        er = {"skipped": str(err)}
    bfc = balanced_forman_curvature(g, n)
    i, j = g.edges
    forman = (4 - g.deg[i] - g.deg[j]).astype(np.float64)          # F(i, j), as forman_curvature
    forman_aug = forman + 3.0 * bfc["triangles"]                     # F#(i, j)
    m = int(g.edges.shape[1])
    out = {
        "num_nodes": n, "num_edges": m, "mean_degree": float(2 * m / n) if n else 0.0,
        "shortest_paths": sps, "effective_resistance": er, "spectral_gap": spectral_gap(g, n),
        "curvature": {"forman": _edge_summary(forman), "forman_augmented": _edge_summary(forman_aug),
                      "balanced_forman": _edge_summary(bfc["curvature"])},
        "reachability": hop_reachability(g.edges, p, cutoff, max_hops) if p is not None and n else {},
    }
    if return_arrays:
        out["per_edge"] = {"edges": g.edges, "forman": forman, "forman_augmented": forman_aug,
                           "balanced_forman": bfc["curvature"]}
    return out


def _distribution(values: list) -> dict:
    """mean, sd (ddof=1; 0.0 for one value), quantiles of the non-None values; ``missing`` counts the Nones."""
    x = np.array([v for v in values if v is not None], dtype=np.float64)
    out = {"count": int(len(x)), "missing": int(len(values) - len(x))}
    if len(x) == 0:
        return out
    q = np.quantile(x, [p for _, p in _QUANTILES])
    out.update(mean=float(x.mean()), sd=float(x.std(ddof=1)) if len(x) > 1 else 0.0, min=float(x.min()),
               **{name: float(v) for (name, _), v in zip(_QUANTILES, q)}, max=float(x.max()))
    return out


def _scalars(g: dict, max_hops: int) -> dict:
    sps, er, c, r = g["shortest_paths"], g["effective_resistance"], g["curvature"], g["reachability"]
    s = {"num_nodes": g["num_nodes"], "num_edges": g["num_edges"], "mean_degree": g["mean_degree"],
         "diameter_hops": sps["diameter_hops"], "mean_shortest_path": sps["mean_shortest_path"],
         "num_components": sps["num_components"], "disconnected_pair_fraction": sps["disconnected_pair_fraction"],
         "effective_resistance_total": er.get("total"), "effective_resistance_max": er.get("max"),
         "effective_resistance_mean": er.get("mean"), "spectral_gap": g["spectral_gap"]}
    for name in ("forman", "forman_augmented", "balanced_forman"):
        s[f"{name}_mean"] = c[name]["mean"]
        s[f"{name}_min"] = c[name]["min"]
        s[f"{name}_fraction_negative"] = c[name]["fraction_negative"]
    within = r.get("reachable_within", {})
    for L in range(1, max_hops + 1):
        s[f"reachable_within_{L}"] = within.get(str(L))
    return s


def dataset_graph_measures(graphs, cutoff: float, max_hops: int, progress: bool = True,
                           max_graphs: int | None = None, bins: dict | None = None,
                           dense_limit: int = 3000, blas_threads: int | None = 1) -> dict:
    """:func:`graph_measures` over PyG ``Data`` objects (fields ``edge_index``, ``pos``, ``num_nodes``), with a
    tqdm progress bar; the first ``max_graphs`` graphs when given. JSON-safe result:

    * ``graphs`` (number processed), ``seconds`` (wall time), ``cutoff``, ``max_hops``;
    * ``disconnected_graphs``: graphs with more than one component (their effective resistances are
      infinite and left out of the distributions: see ``missing``); ``effective_resistance_skipped``: graphs
      with a component over ``dense_limit`` nodes;
    * ``distributions``: for each per-graph scalar (``num_nodes``, ``num_edges``, ``mean_degree``,
      ``diameter_hops``, ``mean_shortest_path``, ``num_components``, ``disconnected_pair_fraction``,
      ``effective_resistance_total`` / ``_max`` / ``_mean``, ``spectral_gap``, ``{forman, forman_augmented,
      balanced_forman}_{mean, min, fraction_negative}``, ``reachable_within_L`` for L = 1 .. max_hops):
      ``{count, missing, mean, sd, min, p05, p25, p50, p75, p95, max}`` over graphs;
    * ``curvature_histograms``: for ``forman``, ``forman_augmented``, ``balanced_forman``, pooled over all
      edges of all graphs, ``{bin_edges, counts, below, above, total}`` with the fixed ``bins`` (default
      :data:`CURVATURE_BINS`; a dict overriding some of them).

    ``blas_threads``: BLAS threads during the loop (via ``threadpoolctl`` when installed; None leaves them).
    The dense eigenproblems of small graphs are fastest single-threaded, and a multithreaded BLAS on a busy
    machine can be several times slower.
    """
    from contextlib import nullcontext

    from tqdm import tqdm

    limit = nullcontext()
    if blas_threads is not None:
        try:
            from threadpoolctl import threadpool_limits
            limit = threadpool_limits(limits=int(blas_threads), user_api="blas")
        except ImportError:
            pass

    edges_of = dict(CURVATURE_BINS, **(bins or {}))
    hist = {k: np.zeros(len(v) - 1, np.int64) for k, v in edges_of.items()}
    below = dict.fromkeys(edges_of, 0)
    above = dict.fromkeys(edges_of, 0)
    total = dict.fromkeys(edges_of, 0)
    scalars: dict[str, list] = {}
    disconnected = skipped = count = 0
    try:
        length = len(graphs)
        length = min(length, max_graphs) if max_graphs is not None else length
    except TypeError:
        length = max_graphs
    it = graphs if max_graphs is None else islice(graphs, max_graphs)
    t0 = time.perf_counter()
    with limit:
        for k, data in enumerate(tqdm(it, total=length, disable=not progress, desc="graph measures")):
            ei = getattr(data, "edge_index", None)
            if ei is None:
                raise ValueError(f"graph {k} has no edge_index (build its edges first)")
            pos = getattr(data, "pos", None)
            g = graph_measures(ei, pos, cutoff, max_hops, num_nodes=int(data.num_nodes), dense_limit=dense_limit,
                               return_arrays=True)
            count += 1
            disconnected += g["shortest_paths"]["num_components"] > 1
            skipped += "skipped" in g["effective_resistance"]
            for name, v in _scalars(g, max_hops).items():
                scalars.setdefault(name, []).append(v)
            for name, be in edges_of.items():
                vals = g["per_edge"][name]
                hist[name] += np.histogram(vals, bins=be)[0]
                below[name] += int((vals < be[0]).sum())
                above[name] += int((vals > be[-1]).sum())
                total[name] += int(len(vals))
    return {
        "graphs": count, "seconds": float(time.perf_counter() - t0), "cutoff": float(cutoff),
        "max_hops": int(max_hops), "disconnected_graphs": int(disconnected),
        "effective_resistance_skipped": int(skipped),
        "distributions": {name: _distribution(v) for name, v in scalars.items()},
        "curvature_histograms": {name: {"bin_edges": [float(e) for e in be], "counts": hist[name].tolist(),
                                        "below": below[name], "above": above[name], "total": total[name]}
                                 for name, be in edges_of.items()},
    }
