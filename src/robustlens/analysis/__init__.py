"""Analyses of activations: streaming, mergeable reducers and plain functions.

Reducers (``update`` / ``merge`` / ``result`` -> tidy DataFrame / ``state_dict``):
:class:`LayerDissimilarity`, :class:`ChannelDissimilarity`, :class:`ChannelSensitivity`,
:class:`ClassRDM`, :class:`ClassManifolds`. Plain functions on (n_stimuli, n_features)
tensors or arrays: :func:`dissimilarity`, :func:`sensitivity`, :func:`rdm`,
:func:`compare_rdms`, :func:`manifold_dimension`, :func:`participation_ratio`,
:func:`correlate`, :func:`pca_images`. Figures live in :mod:`robustlens.analysis.plots`.
"""

from robustlens.analysis._bootstrap import BootstrapEstimate
from robustlens.analysis._reducer import Reducer
from robustlens.analysis.correlation import correlate, correlate_tables
from robustlens.analysis.dissimilarity import (
    ChannelDissimilarity,
    DissimilarityMetric,
    ImageDissimilarity,
    LayerDissimilarity,
    channel_dissimilarity,
    dissimilarity,
    flag_layers,
    pearson_dissimilarity,
    rank_rows,
)
from robustlens.analysis.manifolds import (
    ClassManifolds,
    dimension_from_variances,
    manifold_dimension,
    participation_ratio,
    pca_variances,
)
from robustlens.analysis.pca_images import ActivationPCA, pca_images
from robustlens.analysis.rsa import (
    RDM,
    ClassRDM,
    CompareMethod,
    RDMMetric,
    bootstrap_compare_rdms,
    compare_rdm_sets,
    compare_rdms,
    rdm,
)
from robustlens.analysis.sensitivity import (
    ChannelSensitivity,
    SensitivityLevel,
    sensitivity,
    top_k_channels,
    top_k_neurons,
)

__all__ = [
    "RDM",
    "ActivationPCA",
    "BootstrapEstimate",
    "ChannelDissimilarity",
    "ChannelSensitivity",
    "ClassManifolds",
    "ClassRDM",
    "CompareMethod",
    "DissimilarityMetric",
    "ImageDissimilarity",
    "LayerDissimilarity",
    "RDMMetric",
    "Reducer",
    "SensitivityLevel",
    "bootstrap_compare_rdms",
    "channel_dissimilarity",
    "compare_rdm_sets",
    "compare_rdms",
    "correlate",
    "correlate_tables",
    "dimension_from_variances",
    "dissimilarity",
    "flag_layers",
    "manifold_dimension",
    "participation_ratio",
    "pca_images",
    "pca_variances",
    "pearson_dissimilarity",
    "rank_rows",
    "rdm",
    "sensitivity",
    "top_k_channels",
    "top_k_neurons",
]
