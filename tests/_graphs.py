"""Small batches built by farfield itself from its example peptide (no external data needed)."""
from __future__ import annotations

from functools import lru_cache

from torch_geometric.data import Batch

from farfield.data import Featuriser, FeaturiserConfig
from farfield.io import example_path, read_structure


@lru_cache(maxsize=None)
def example_batch(level: str = "residue", dtype: str = "float64") -> Batch:
    """Two different graphs: residues 1-10 and 11-16 of the example peptide (atom level: residues 1-3 and 4-5)."""
    s = read_structure(example_path())
    if level == "residue":
        parts = [s.select(s.res_seq <= 10), s.select((s.res_seq > 10) & (s.res_seq <= 16))]
        feat = Featuriser(FeaturiserConfig(level="residue", edges="knn:8", dtype=dtype))
    else:
        parts = [s.select(s.res_seq <= 3), s.select((s.res_seq > 3) & (s.res_seq <= 5))]
        feat = Featuriser(FeaturiserConfig(level="atom", edges="radius:4.5", dtype=dtype))
    return Batch.from_data_list([feat(p) for p in parts])
