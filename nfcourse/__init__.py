"""nfcourse: the tested PyTorch package behind the normalizing-flows course.

Convention (chapter 1): ``forward(z) -> (x, log_abs_det)`` maps base to data, ``x = f(z)``;
``inverse(x) -> (z, log_abs_det)`` normalizes. Tensors are batch first, ``(B, D)``.

Modules: ``core`` (transforms, composition, flow model), ``distributions`` (the base
distributions), ``flows`` (one module per chapter), ``training`` (the training loop
``train`` and every ``fit_*``),
``densities`` (toy densities with exact log-densities), ``targets`` (the energy functions
of chapter 3), ``images`` (image data sets, dequantization, bits per dimension), ``vae``
(chapter 6), ``testing`` (numerical checks), ``validation`` (input checks and the dtype
policy), ``seeding`` (what ``seed`` means), ``checks`` (exercise feedback), ``plot`` and
``widgets``.
"""

from . import (
    checks,
    densities,
    distributions,
    flows,
    images,
    plot,
    seeding,
    targets,
    testing,
    training,
    vae,
)
from .core import (
    Compose,
    Flow,
    InverseTransform,
    Transform,
    default_device,
    to_torch_transform,
)
from .distributions import BaseDistribution, DiagonalNormal, StandardNormal, Uniform01
from .flows import *  # noqa: F403
from .training import TrainingDiverged, fit_maximum_likelihood, fit_reverse_kl, fit_vae, train
from .validation import check_batch

__version__ = "0.1.0"

__all__ = [
    "checks",
    "densities",
    "distributions",
    "images",
    "plot",
    "seeding",
    "targets",
    "testing",
    "vae",
    "Compose",
    "Flow",
    "InverseTransform",
    "Transform",
    "default_device",
    "to_torch_transform",
    "BaseDistribution",
    "DiagonalNormal",
    "StandardNormal",
    "Uniform01",
    "training",
    "TrainingDiverged",
    "fit_maximum_likelihood",
    "fit_reverse_kl",
    "fit_vae",
    "train",
    "check_batch",
]
__all__ += flows.__all__
