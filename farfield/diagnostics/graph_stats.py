"""Graph diagnostics for ``farfield inspect``: degrees, edge lengths, hop diameter, and how much of the
far field a message-passing network of L layers can see.

Reachability: for the pairs of nodes farther apart than ``cutoff`` (Euclidean), the fraction whose
hop distance in the graph is <= L, for L = 1..max_hops. That is the share of long-range pairs an L-layer
MPNN on this graph can exchange information between at all (Topping et al. 2022; Alon & Yahav 2021).
Exact BFS from every node when the graph has at most ``exact_limit`` nodes; otherwise from a seeded
random sample of ``sample_sources`` nodes (the result says which, and the diameter is then a lower bound).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

__all__ = ["degree_stats", "edge_length_stats", "hop_reachability", "graph_summary"]


def degree_stats(edge_index: np.ndarray, num_nodes: int) -> dict:
    """In-degree (edges received per target) summary."""
    deg = np.bincount(edge_index[1], minlength=num_nodes) if edge_index.shape[1] else np.zeros(num_nodes, int)
    return {"min": int(deg.min()) if num_nodes else 0, "mean": float(deg.mean()) if num_nodes else 0.0,
            "median": float(np.median(deg)) if num_nodes else 0.0, "max": int(deg.max()) if num_nodes else 0,
            "isolated": int((deg == 0).sum())}


def edge_length_stats(lengths: np.ndarray, bins: int = 10) -> dict:
    """Quantiles and a histogram of edge lengths (Angstrom)."""
    if len(lengths) == 0:
        return {"count": 0}
    q = np.quantile(lengths, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
    counts, edges = np.histogram(lengths, bins=bins)
    return {"count": int(len(lengths)), "mean": float(lengths.mean()),
            "quantiles": dict(zip(["min", "p05", "p25", "p50", "p75", "p95", "max"], map(float, q))),
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}}


def hop_reachability(edge_index: np.ndarray, pos: np.ndarray, cutoff: float, max_hops: int = 6,
                     exact_limit: int = 4000, sample_sources: int = 512, seed: int = 0) -> dict:
    """Diameter in hops and the fraction of pairs beyond ``cutoff`` reachable within L hops.

    Edges are treated as undirected (messages can flow either way over the layers of typical models
    only if edges exist both ways; radius/kNN/random-symmetric graphs are close to symmetric).
    """
    n = len(pos)
    if n == 0:
        return {}
    adj = sp.coo_matrix((np.ones(edge_index.shape[1]), (edge_index[0], edge_index[1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    exact = n <= exact_limit
    sources = np.arange(n) if exact else np.sort(np.random.default_rng(seed).choice(n, sample_sources, replace=False))
    reach = np.zeros(max_hops, dtype=np.int64)
    far_total = 0
    diameter = 0
    disconnected = 0
    for c0 in range(0, len(sources), 256):
        src = sources[c0:c0 + 256]
        hops = shortest_path(adj, method="D", unweighted=True, indices=src)       # [s, n], inf = unreachable
        d = np.linalg.norm(pos[src][:, None, :] - pos[None, :, :], axis=-1)
        far = d > cutoff
        far_total += int(far.sum())
        for L in range(1, max_hops + 1):
            reach[L - 1] += int((far & (hops <= L)).sum())
        finite = np.isfinite(hops)
        disconnected += int((~finite).sum())
        if finite.any():
            diameter = max(diameter, int(hops[finite].max()))
    return {
        "exact": bool(exact), "sources": int(len(sources)), "cutoff": float(cutoff),
        "diameter_hops": int(diameter), "diameter_is_lower_bound": not exact,
        "connected": disconnected == 0, "pairs_beyond_cutoff": int(far_total),
        "reachable_within": {str(L): (float(reach[L - 1] / far_total) if far_total else None)
                             for L in range(1, max_hops + 1)},
    }


def graph_summary(edge_index, edge_type, type_names, pos, cutoff: float, max_hops: int = 6) -> dict:
    """Everything ``farfield inspect`` reports about one graph (NumPy or torch inputs)."""
    ei = np.asarray(edge_index.cpu() if hasattr(edge_index, "cpu") else edge_index)
    et = np.asarray(edge_type.cpu() if hasattr(edge_type, "cpu") else edge_type)
    p = np.asarray(pos.cpu() if hasattr(pos, "cpu") else pos, dtype=np.float64)
    n = len(p)
    lengths = np.linalg.norm(p[ei[0]] - p[ei[1]], axis=1) if ei.shape[1] else np.zeros(0)
    per_type = {}
    for t, name in enumerate(type_names):
        m = et == t
        per_type[name] = {"edges": int(m.sum()), "degree": degree_stats(ei[:, m], n),
                          "length": edge_length_stats(lengths[m])}
    return {
        "nodes": int(n), "edges": int(ei.shape[1]), "degree": degree_stats(ei, n),
        "length": edge_length_stats(lengths), "per_type": per_type,
        "reachability": hop_reachability(ei, p, cutoff, max_hops),
    }
