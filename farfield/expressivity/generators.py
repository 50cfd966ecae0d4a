"""Pairs of geometric graphs from the geometric Weisfeiler-Leman study (Joshi, Bodnar, Mathis, Cohen &
Lio, "On the Expressive Power of Geometric Graph Neural Networks", ICML 2023; reference code
chaitjo/geometric-gnn-dojo).

Every generator returns two PyG ``Data`` (labels 0 and 1) with equal node features (``x_s`` = 1), float64
coordinates, undirected edges and the fields of :mod:`farfield.data.fields`, so any backbone runs on them.
Tests are named by strings: ``chain:K`` (K >= 2), ``star:FOLD`` (FOLD >= 2), ``2body``, ``3body``,
``chiral``, ``handed`` (:func:`make_pair`).

Finding: the published "chiral" pair (Joshi et al. 2023) is *not* chiral. Its first graph has a mirror
plane (x -> -x swaps (3,0,-4) and (-3,0,-4)), so its mirror image is also a proper rotation of it
(R_z(pi) maps one graph onto the other): no model invariant to rotations, SE(3) models included, can tell
them apart. It is kept under its published name for comparison; ``handed`` is a genuinely chiral pair
(three neighbours at distinct distances along the axes, and its mirror image), which SE(3)-only models can
separate and E(3) models cannot.
"""
from __future__ import annotations

import math

import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from farfield.errors import ConfigError

__all__ = ["k_chain_pair", "star_pair", "two_body_pair", "three_body_pair", "chiral_pair", "handed_pair", "make_pair",
           "TEST_NAMES", "DEFAULT_TESTS"]

TEST_NAMES = ("chain:K", "star:FOLD", "2body", "3body", "chiral", "handed")
DEFAULT_TESTS = ("chain:4", "star:2", "star:3", "2body", "3body", "chiral", "handed")


def _graph(pos, edges, label: int, name: str) -> Data:
    pos = torch.tensor(pos, dtype=torch.float64)
    ei = to_undirected(torch.tensor(edges, dtype=torch.long).T.contiguous(), num_nodes=len(pos))
    n = len(pos)
    return Data(pos=pos, x_s=torch.ones(n, 1, dtype=torch.float64), atom_type=torch.zeros(n, dtype=torch.long),
                chain_index=torch.zeros(n, dtype=torch.long), edge_index=ei,
                edge_type=torch.zeros(ei.shape[1], dtype=torch.long), y=torch.tensor([label]), name=name,
                num_nodes=n)


def _centre(pos):
    c = [sum(p[i] for p in pos) / len(pos) for i in range(3)]
    return [[p[i] - c[i] for i in range(3)] for p in pos]


def k_chain_pair(k: int) -> list[Data]:
    """k-chains: k + 2 nodes on a path; the pair differs by moving one end node (mirror about the chain
    axis), so it is (floor(k/2) + 1)-hop distinguishable and invisible to invariant models."""
    if k < 2:
        raise ConfigError(f"chain length k must be >= 2, got {k}")
    chain = [[0.0, 5.0 * i, 0.0] for i in range(k)]
    end = [4.0, 5.0 * (k - 1) + 3.0, 0.0]
    edges = [[i, i + 1] for i in range(k + 1)]
    g0 = _graph(_centre([[-4.0, -3.0, 0.0]] + chain + [end]), edges, 0, f"chain:{k}/0")
    g1 = _graph(_centre([[4.0, -3.0, 0.0]] + chain + [end]), edges, 1, f"chain:{k}/1")
    return [g0, g1]


def _rot_z(p, a):
    c, s = math.cos(a), math.sin(a)
    # snap round-off (cos(pi/2) = 6e-17) so that symmetric stars are exactly symmetric where representable
    return [0.0 if abs(x) < 1e-12 else x for x in (c * p[0] - s * p[1], s * p[0] + c * p[1], p[2])]


def star_pair(fold: int, angle: float | None = None) -> list[Data]:
    """A ``fold``-fold rotationally symmetric star (centre + spokes at unit distance in the xy plane) and
    the same star rotated about z by ``angle`` (default pi / fold, always below 2 pi / fold)."""
    if fold < 2:
        raise ConfigError(f"star fold must be >= 2, got {fold}")
    angle = math.pi / fold if angle is None else float(angle)
    if not 0 < angle < 2 * math.pi / fold:
        raise ConfigError(f"star rotation angle must be in (0, 2 pi / fold), got {angle}")
    pos = [[0.0, 0.0, 0.0]] + [_rot_z([1.0, 0.0, 0.0], 2 * math.pi * i / fold) for i in range(fold)]
    edges = [[0, i] for i in range(1, fold + 1)]
    return [_graph(pos, edges, 0, f"star:{fold}/0"), _graph([_rot_z(p, angle) for p in pos], edges, 1, f"star:{fold}/1")]


def _star(neigh, label, name):
    pos = [[0.0, 0.0, 0.0]] + [list(map(float, p)) for p in neigh]
    return _graph(pos, [[0, i] for i in range(1, len(pos))], label, name)


def two_body_pair() -> list[Data]:
    """Same neighbour distances, different angle: invisible to 2-body (distance-only) aggregation."""
    return [_star([(5, 0, 0), (3, 0, 4)], 0, "2body/0"), _star([(5, 0, 0), (-5, 0, 0)], 1, "2body/1")]


def three_body_pair() -> list[Data]:
    """Same distances and pairwise angles around the centre: invisible to 3-body aggregation."""
    a, b, b2 = (5, 0, 5), (5, 5, 5), (-5, -5, 5)
    return [_star([a, b, b2, (0, 5, 5)], 0, "3body/0"), _star([a, b, b2, (0, -5, 5)], 1, "3body/1")]


def chiral_pair() -> list[Data]:
    """The published "chiral" pair: mirror images, but also rotations of each other (module docstring)."""
    base = [(3, 0, -4), (0, 0, 5), (-3, 0, -4)]
    return [_star(base + [(0, 5, 0)], 0, "chiral/0"), _star(base + [(0, -5, 0)], 1, "chiral/1")]


def handed_pair() -> list[Data]:
    """A chiral centre (neighbours at 1, 2, 3 A along x, y, z) and its mirror image (x -> -x): the sign of
    the triple product of the neighbour directions, ordered by distance, differs."""
    return [_star([(1, 0, 0), (0, 2, 0), (0, 0, 3)], 0, "handed/0"),
            _star([(-1, 0, 0), (0, 2, 0), (0, 0, 3)], 1, "handed/1")]


def make_pair(test: str) -> list[Data]:
    """Build the pair named ``test`` (see the module docstring)."""
    name, _, arg = test.partition(":")
    try:
        if name == "chain" and arg:
            return k_chain_pair(int(arg))
        if name == "star" and arg:
            return star_pair(int(arg))
    except ValueError:
        raise ConfigError(f"expressivity test {test!r}: {arg!r} is not an integer") from None
    table = {"2body": two_body_pair, "3body": three_body_pair, "chiral": chiral_pair, "handed": handed_pair}
    if name in table and not arg:
        return table[name]()
    raise ConfigError(f"unknown expressivity test {test!r}; use one of {', '.join(TEST_NAMES)}")
