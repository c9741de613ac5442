"""Looking inside: feature visualization, DeepDream, dataset examples, weights and saliency.

Activation maximization is built from three parts (Olah et al. 2017, Lucid / Lucent):
parameterizations (:mod:`.param`), objectives (:mod:`.objectives`) and transforms
(:mod:`.transforms`), put together by :func:`render`. Saliency methods are constructed with
the model and called once (:mod:`.saliency`). Everything works in pixel space ([0, 1]),
takes its device from the model or the images and its randomness from explicit seeds,
removes its hooks even on error, and leaves the model's weights, modes and buffers as they
were. Nothing is shown or saved: functions return tensors, and ``plot_*`` return matplotlib
figures.
"""

from robustlens.visualization import objectives, transforms
from robustlens.visualization.compare import plot_top_channels, render_top_channels
from robustlens.visualization.deepdream import deepdream
from robustlens.visualization.examples import DatasetExamples, ExampleSet, receptive_field
from robustlens.visualization.figures import (
    plot_examples,
    plot_image_grid,
    plot_image_groups,
    plot_image_rows,
    plot_saliency,
    saliency_heatmap,
)
from robustlens.visualization.objectives import Objective
from robustlens.visualization.param import FourierImage, ImageParam, PixelImage
from robustlens.visualization.render import RenderResult, objective_values, render
from robustlens.visualization.saliency import (
    Attribution,
    GradientXInput,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from robustlens.visualization.weights import (
    first_conv,
    gabor_layout,
    plot_gabor_layout,
    plot_weights,
    weight_grid,
)

__all__ = [
    "Attribution",
    "DatasetExamples",
    "ExampleSet",
    "FourierImage",
    "GradientXInput",
    "GuidedBackprop",
    "ImageParam",
    "IntegratedGradients",
    "Objective",
    "PixelImage",
    "RenderResult",
    "Saliency",
    "SmoothGrad",
    "deepdream",
    "first_conv",
    "gabor_layout",
    "objective_values",
    "objectives",
    "plot_examples",
    "plot_gabor_layout",
    "plot_image_grid",
    "plot_image_groups",
    "plot_image_rows",
    "plot_saliency",
    "plot_top_channels",
    "plot_weights",
    "receptive_field",
    "render",
    "render_top_channels",
    "saliency_heatmap",
    "transforms",
    "weight_grid",
]
