"""Graph construction: edge builders, their composition and spec strings.

>>> from farfield.graphs import GraphBuilder
>>> edges = GraphBuilder("radius:4.5,max=32+random:10")(pos, batch)   # doctest: +SKIP
"""
from farfield.graphs.builders import KNN, LAWS, EdgeBuilder, Full, GraphContext, RandomLongRange, Radius, Sequence
from farfield.graphs.compose import BUILDER_NAMES, Edges, GraphBuilder, parse_edge_spec

__all__ = [
    "BUILDER_NAMES", "KNN", "LAWS", "EdgeBuilder", "Edges", "Full", "GraphBuilder", "GraphContext",
    "RandomLongRange", "Radius", "Sequence", "parse_edge_spec",
]
