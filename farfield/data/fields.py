"""The one place that names the fields of farfield's PyG ``Data`` / ``Batch`` objects.

Node fields (N nodes: atoms at atom level, residues at residue level):

=================  ===================  ============================================================
name               shape / dtype        meaning
=================  ===================  ============================================================
``pos``            [N, 3] float         coordinates (Angstrom); CA at residue level
``atom_type``      [N] long             element class (atom level; see ElementVocabulary)
``res_type``       [N] long             residue type 0..20 (residue level; 20 = unknown)
``x_s``            [N, F] float         node scalar features
``x_v``            [N, V, 3] float      node vector features (residue level: forward, backward CA
                                        directions and side-chain direction), absent at atom level
``chain_index``    [N] long             chain number within the structure (0-based)
``residue_index``  [N] long             residue number within the structure (0-based, atom level)
``seq_index``      [N] long             position along the chain (residue level)
``backbone``       [N, 4, 3] float      N, CA, C, O (residue level; missing atoms at CA, see mask)
``backbone_mask``  [N, 4] bool          which backbone atoms exist
``seqres_index``   [N] long             position in the chain's SEQRES sequence, counting unresolved
                                        residues (DeepFRI sets; ``seq_index`` then equals it)
``component``      [N] long             which structure of a pair a node belongs to (ATOM3D MSP: 0
                                        original, 1 mutated); each component is its own graph to the model
``segment``        [N] long             contiguous backbone segment (residue level; a new segment at every
                                        chain start and chain break): what features are recomputed with
                                        after a structure is corrupted (pretraining corpora)
``plddt``          [N] float            per-residue model confidence pLDDT in [0, 100] (AlphaFold /
                                        ESMFold models: the CA atom's B-factor column), corpora only
``batch``          [N] long             graph index (added by PyG's Batch)
=================  ===================  ============================================================

Edge fields (E edges, row 0 = source j, row 1 = target i):

=================  ===================  ============================================================
``edge_index``     [2, E] long          edges
``edge_type``      [E] long             index of the builder that made the edge (see ``edge_types``)
``edge_s``         [E, F_e] float       edge scalar features (residue level: sequence-offset encoding)
``cell_shift``     [E, 3] long          periodic graphs only: the lattice image of the source, so that the
                                        edge vector is ``pos[j] - pos[i] + cell_shift @ cell``
=================  ===================  ============================================================

Graph fields: ``y`` [1, T] float (graph labels), ``name`` (str), ``edge_types`` (str: the edge spec,
'+'-separated builder specs in ``edge_type`` order), ``graph_key`` [1] long (key for random edge builders),
``group`` [1] long (items of one group, e.g. conformers of one sequence, are kept in one split), ``split`` [1]
long (0 train, 1 val, 2 test: a dataset's official split, used instead of a random one),
``baseline_<name>`` [1, F] float (features of a study's reference baseline, e.g. ``baseline_composition``:
amino-acid or atom-type composition), ``identity`` [1, 5] bool (DeepFRI test chains: below 30/40/50/70/95%
sequence identity to the training set), ``cell`` [1, 3, 3] float (periodic systems only: rows are the lattice
vectors a, b, c in Angstrom; periodic in all three directions; a batch stacks them to [B, 3, 3]).
"""
POS = "pos"
ATOM_TYPE = "atom_type"
RES_TYPE = "res_type"
X_S = "x_s"
X_V = "x_v"
CHAIN_INDEX = "chain_index"
RESIDUE_INDEX = "residue_index"
SEQ_INDEX = "seq_index"
BACKBONE = "backbone"
BACKBONE_MASK = "backbone_mask"
EDGE_INDEX = "edge_index"
EDGE_TYPE = "edge_type"
EDGE_S = "edge_s"
Y = "y"
NAME = "name"
EDGE_TYPES = "edge_types"
GRAPH_KEY = "graph_key"
GROUP = "group"
SPLIT = "split"
SEQRES_INDEX = "seqres_index"
COMPONENT = "component"
IDENTITY = "identity"
CELL = "cell"
CELL_SHIFT = "cell_shift"
SEGMENT = "segment"
PLDDT = "plddt"
BASELINE_PREFIX = "baseline_"

NODE_FIELDS = (POS, ATOM_TYPE, RES_TYPE, X_S, X_V, CHAIN_INDEX, RESIDUE_INDEX, SEQ_INDEX, BACKBONE, BACKBONE_MASK)
EDGE_FIELDS = (EDGE_INDEX, EDGE_TYPE, EDGE_S, CELL_SHIFT)
GRAPH_FIELDS = (Y, NAME, EDGE_TYPES, GRAPH_KEY, GROUP, SPLIT)
