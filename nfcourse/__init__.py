"""nfcourse: the tested PyTorch package behind the normalizing-flows course.

Convention (chapter 1): ``forward(z) -> (x, log_abs_det)`` maps base to data, ``x = f(z)``;
``inverse(x) -> (z, log_abs_det)`` normalizes. Tensors are batch first, ``(B, D)``.
"""

from . import checks, data, plot, testing
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
from . import targets  # noqa: E402
from . import images  # noqa: E402  chapter 5: dequantization and bits per dimension
