"""Activations as images: PCA over channels at every position (study S1).

A (C, H, W) activation has a C-dimensional vector at each of its H x W positions. Fitting a
PCA to those vectors (over the positions of one or more *clean* activations) and projecting
every position on the first 3 (or 1) components turns the activation into an RGB (or grey)
H x W image. The same components and the same colour scale are applied to the adversarial
activation, so the two images are directly comparable: where they differ, the perturbation
changed what the layer represents there.
"""

from __future__ import annotations

import numpy as np
import torch

from robustlens.errors import RobustlensError

__all__ = ["ActivationPCA", "pca_images"]


def _as_batch(activations: torch.Tensor) -> torch.Tensor:
    if not isinstance(activations, torch.Tensor):
        raise RobustlensError(f"activations must be a torch.Tensor; received "
                              f"{type(activations).__name__}.")
    a = activations.detach()
    if a.ndim == 3:
        a = a.unsqueeze(0)
    if a.ndim < 3:
        raise RobustlensError(f"activations must be (C, H, W) or (B, C, H, W) maps; received shape "
                              f"{tuple(activations.shape)}. A (B, D) vector has no positions.")
    return a


def _positions(a: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B * prod(S), C) float64: one row per image and position."""
    return a.double().movedim(1, -1).reshape(-1, a.shape[1])


def _top_components(xc: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest variances of centred (n, C) rows and their (k, C) unit directions.

    With fewer rows than channels (a deep layer's few positions: ResNet50's layer4 has 49 per
    image for 2048 channels) the (n, n) Gram matrix has the same non-zero eigenvalues, and
    its eigenvectors map onto the covariance's (``xc.T @ u``, normalised); otherwise the
    (C, C) covariance is decomposed. A direction of zero variance has no image under that
    map, so the covariance is used whenever one of the ``k`` would have zero variance.
    """
    n, c = xc.shape
    if n < c:
        values, vectors = torch.linalg.eigh(xc @ xc.T / (n - 1))
        order = torch.argsort(values, descending=True)[:k]
        top = values[order]
        if bool((top > values.abs().max() * n * torch.finfo(values.dtype).eps).all()):
            comps = (xc.T @ vectors[:, order]).T
            return top, (comps / comps.norm(dim=1, keepdim=True)).contiguous()
    values, vectors = torch.linalg.eigh(xc.T @ xc / (n - 1))
    order = torch.argsort(values, descending=True)[:k]
    return values[order], vectors[:, order].T.contiguous()


class ActivationPCA:
    """PCA over the channels of convolutional activations (scikit-learn conventions).

    Args:
        n_components: components kept (3 for an RGB image, 1 for grey).
        quantile: the colour scale of :meth:`to_images` maps the ``quantile`` and
            ``1 - quantile`` quantiles of each component over the fitted positions to 0 and
            1 (clipping beyond); 0 uses the minimum and maximum.

    Attributes (after :meth:`fit`):
        mean_: (C,) float64 mean channel vector.
        components_: (n_components, C) float64 unit vectors, the largest-magnitude entry of
            each positive (a deterministic sign).
        explained_variance_: (n_components,) variances along them (denominator n - 1).
        explained_variance_ratio_: (n_components,) fractions of the total variance.
        low_, high_: (n_components,) the colour scale.
    """

    def __init__(self, n_components: int = 3, quantile: float = 0.01) -> None:
        if n_components < 1:
            raise RobustlensError(f"n_components must be >= 1; received {n_components}.")
        if not 0.0 <= quantile < 0.5:
            raise RobustlensError(f"quantile must lie in [0, 0.5); received {quantile}.")
        self.n_components, self.quantile = n_components, quantile

    def fit(self, activations: torch.Tensor) -> ActivationPCA:
        """Fit the components to clean activations, (C, H, W) or (B, C, H, W)."""
        a = _as_batch(activations)
        c = a.shape[1]
        if self.n_components > c:
            raise RobustlensError(f"n_components={self.n_components} exceeds the {c} channels.")
        x = _positions(a)
        if x.shape[0] < 2:
            raise RobustlensError("fitting a PCA needs at least 2 positions.")
        self.mean_ = x.mean(0)
        xc = x - self.mean_
        values, comps = _top_components(xc, self.n_components)
        pivot = comps.abs().argmax(dim=1)
        signs = torch.sign(comps[torch.arange(len(comps)), pivot])
        self.components_ = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        self.explained_variance_ = values.clamp_min(0.0)
        total = float((xc * xc).sum()) / (x.shape[0] - 1)  # the trace of the covariance
        self.explained_variance_ratio_ = (self.explained_variance_ / total if total > 0
                                          else torch.zeros_like(self.explained_variance_))
        proj = xc @ self.components_.T
        bounds = np.quantile(proj.cpu().numpy(), [self.quantile, 1.0 - self.quantile], axis=0)
        self.low_ = torch.from_numpy(bounds[0]).to(proj.device)
        self.high_ = torch.from_numpy(bounds[1]).to(proj.device)
        return self

    def _check_fitted(self, a: torch.Tensor) -> None:
        if not hasattr(self, "components_"):
            raise RobustlensError("this ActivationPCA is not fitted yet; call fit() on the clean "
                                  "activations first.")
        if a.shape[1] != self.components_.shape[1]:
            raise RobustlensError(f"fitted on {self.components_.shape[1]} channels; received "
                                  f"{a.shape[1]}.")

    def transform(self, activations: torch.Tensor) -> torch.Tensor:
        """Project every position on the components.

        Args:
            activations: (C, H, W) or (B, C, H, W) (any spatial shape).

        Returns:
            (B, n_components, H, W) float64 projections, in activation units.
        """
        a = _as_batch(activations)
        self._check_fitted(a)
        proj = (_positions(a) - self.mean_) @ self.components_.T
        return proj.reshape(a.shape[0], *a.shape[2:], self.n_components).movedim(-1, 1)

    def to_images(self, projected: torch.Tensor) -> torch.Tensor:
        """Map projections to [0, 1] with the colour scale fitted on the clean activations.

        Args:
            projected: (B, n_components, H, W) from :meth:`transform`.

        Returns:
            (B, n_components, H, W) float32 in [0, 1]: RGB for 3 components, grey for 1.
        """
        shape = (1, -1) + (1,) * (projected.ndim - 2)
        low, high = self.low_.reshape(shape), self.high_.reshape(shape)
        span = torch.where(high > low, high - low, torch.ones_like(high))
        return ((projected.double() - low) / span).clamp(0.0, 1.0).float()


def pca_images(clean: torch.Tensor, adversarial: torch.Tensor, n_components: int = 3,
               quantile: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and adversarial activations as images, through a PCA fitted on the clean ones.

    Args:
        clean: (C, H, W) or (B, C, H, W) activations of a layer.
        adversarial: activations of the same layer and shape.
        n_components: 3 (RGB) or 1 (grey); any number up to C works.
        quantile: colour-scale quantile (see :class:`ActivationPCA`).

    Returns:
        (clean_images, adversarial_images), each (B, n_components, H, W) float32 in [0, 1].
    """
    if clean.shape != adversarial.shape:
        raise RobustlensError(f"clean and adversarial activations differ in shape: "
                              f"{tuple(clean.shape)} vs {tuple(adversarial.shape)}")
    pca = ActivationPCA(n_components, quantile).fit(clean)
    return pca.to_images(pca.transform(clean)), pca.to_images(pca.transform(adversarial))
