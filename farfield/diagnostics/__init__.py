"""Range diagnostics: is a task long-range, and how far does a trained model look?

* :mod:`~farfield.diagnostics.graph_stats` and :mod:`~farfield.diagnostics.graph_measures`: measures of a
  graph construction (hop diameter and reachability, effective resistance, spectral gap, Forman and balanced
  Forman curvature);
* :mod:`~farfield.diagnostics.influence`: Jacobian influence of inputs on outputs, the range measure of
  Bamberger et al. (2025), influence against distance;
* :mod:`~farfield.diagnostics.smoothing`: over-smoothing (MAD of node embeddings per layer).

``farfield diagnose graphs`` / ``farfield diagnose model`` run them from the command line.
"""
from farfield.diagnostics.graph_stats import degree_stats, edge_length_stats, graph_summary, hop_reachability
from farfield.diagnostics.graph_measures import (balanced_forman_curvature, dataset_graph_measures,
                                                 effective_resistance, forman_curvature, graph_measures,
                                                 shortest_path_stats, spectral_gap)
from farfield.diagnostics.influence import (Influence, InfluenceProfile, RangeMeasure, euclidean_distances,
                                            hop_distances, influence, influence_profile, load_trained, model_fn,
                                            pairwise_influence, range_measure)
from farfield.diagnostics.smoothing import hop_mask, layer_embeddings, mad, mad_per_layer

__all__ = ["degree_stats", "edge_length_stats", "graph_summary", "hop_reachability",
           "Influence", "InfluenceProfile", "RangeMeasure", "euclidean_distances", "hop_distances", "influence",
           "influence_profile", "load_trained", "model_fn", "pairwise_influence", "range_measure",
           "hop_mask", "layer_embeddings", "mad", "mad_per_layer",
           "shortest_path_stats", "effective_resistance", "spectral_gap", "forman_curvature",
           "balanced_forman_curvature", "graph_measures", "dataset_graph_measures"]
