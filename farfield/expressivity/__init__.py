"""Expressivity suite: geometric WL counterexample pairs and the protocol to test models on them."""
from farfield.expressivity.generators import (DEFAULT_TESTS, TEST_NAMES, chiral_pair, handed_pair, k_chain_pair, make_pair,
                                              star_pair,
                                              three_body_pair, two_body_pair)
from farfield.expressivity.protocol import (DEFAULT_MODELS, DISTINCT, NEAR_FLOOR, ExpressivityClassifier,
                                            ExpressivityResult, build_model, chain_depth, family, readout_distance,
                                            run_expressivity, theory, train_pair)

__all__ = ["DEFAULT_MODELS", "DEFAULT_TESTS", "DISTINCT", "NEAR_FLOOR", "chain_depth", "family", "ExpressivityClassifier", "ExpressivityResult", "TEST_NAMES",
           "build_model", "chiral_pair", "handed_pair", "k_chain_pair", "make_pair", "readout_distance", "run_expressivity",
           "star_pair", "theory", "three_body_pair", "train_pair", "two_body_pair"]
