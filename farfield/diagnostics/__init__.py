"""Diagnostics of graphs (and, later, of trained models)."""
from farfield.diagnostics.graph_stats import degree_stats, edge_length_stats, graph_summary, hop_reachability

__all__ = ["degree_stats", "edge_length_stats", "graph_summary", "hop_reachability"]
