"""Recording activations: one entry per call of each layer, safe from in-place operations.

Also: layer selection and ``"layer#channel"`` addressing (:mod:`.layers`), clean and
adversarial recordings under the same noise (:func:`record_paired`), and an on-disk HDF5
store (:class:`ActivationWriter`, :class:`ActivationStore`).
"""

from robustlens.activations.layers import (
    ChannelRef,
    LayerSelection,
    LayerSpec,
    LayerSpecs,
    call_name,
    format_channel,
    from_lucent,
    layer_aliases,
    layer_names,
    layers_for,
    parse_channel,
    penultimate_layer,
    resolve_layer_name,
    resolve_layers,
    split_call,
)
from robustlens.activations.paired import record_paired
from robustlens.activations.recorder import CopyMode, Recording, record
from robustlens.activations.store import ActivationStore, ActivationWriter

__all__ = [
    "ActivationStore",
    "ActivationWriter",
    "ChannelRef",
    "CopyMode",
    "LayerSelection",
    "LayerSpec",
    "LayerSpecs",
    "Recording",
    "call_name",
    "format_channel",
    "from_lucent",
    "layer_aliases",
    "layer_names",
    "layers_for",
    "parse_channel",
    "penultimate_layer",
    "record",
    "record_paired",
    "resolve_layer_name",
    "resolve_layers",
    "split_call",
]
