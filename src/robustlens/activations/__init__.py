"""Recording activations: one entry per call of each layer, safe from in-place operations."""

from robustlens.activations.recorder import Recording, layer_names, record, split_call

__all__ = ["Recording", "layer_names", "record", "split_call"]
