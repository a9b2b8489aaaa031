"""nfcourse: the tested PyTorch package behind the normalizing-flows course.

Convention (chapter 1): ``forward(z) -> (x, log_abs_det)`` maps base to data, ``x = f(z)``;
``inverse(x) -> (z, log_abs_det)`` normalizes. Tensors are batch first, ``(B, D)``.

Modules: ``core`` (transforms, composition, flow model), ``flows`` (one module per chapter),
``train`` (the training loop), ``data`` (toy densities and shipped data sets), ``targets``
(the energy functions of chapter 3), ``images`` (dequantization, bits per dimension),
``vae`` (chapter 6), ``testing`` (numerical checks), ``checks`` (exercise feedback),
``plot`` and ``widgets``.
"""

from . import checks, data, images, plot, targets, testing, vae
from .core import (
    Compose,
    DiagonalNormal,
    Flow,
    InverseTransform,
    StandardNormal,
    Transform,
    check_batch,
    default_device,
    to_torch_transform,
)
from .flows import *  # noqa: F401,F403
from .train import TrainingDiverged, fit_maximum_likelihood, fit_reverse_kl, train

__version__ = "0.1.0"
