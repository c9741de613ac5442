"""Analyses of activations: streaming, mergeable reducers and plain functions."""

from robustlens.analysis._reducer import Reducer
from robustlens.analysis.dissimilarity import LayerDissimilarity, pearson_dissimilarity

__all__ = ["LayerDissimilarity", "Reducer", "pearson_dissimilarity"]
