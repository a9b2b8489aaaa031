"""The flows of the course, one module per family, named like its chapter.

=================  =======  ==========================================================
module             chapter  transforms
=================  =======  ==========================================================
``elementwise``    1        ``SinhArcsinh``
``affine``         2        ``ElementwiseAffine``, ``TriangularAffine``, ``LUAffine``
``planar``         3        ``PlanarFlow`` (with a numerical inverse)
``radial``         3        ``RadialFlow``
``piecewise``      4        ``PiecewiseLinear``
``coupling``       5        ``AdditiveCoupling``, ``AffineCoupling``,
                            ``PiecewiseLinearCoupling``, ``coupling_flow``
``masks``          5        ``half_mask``, ``alternating_mask``, ``checkerboard_mask``
``permutation``    5        ``Permutation``, ``ReversePermutation``
``actnorm``        5        ``ActNorm``
``continuous``     10       ``ContinuousFlow``, ``VelocityField``, ``continuous_flow``,
                            ``flow_matching_loss`` (torchdiffeq's solvers)
=================  =======  ==========================================================

The base distributions (``StandardNormal``, ``DiagonalNormal``, ``Uniform01``) live in
``nfcourse.distributions``.
"""

from .actnorm import ActNorm
from .affine import (
    ElementwiseAffine,
    LUAffine,
    TriangularAffine,
    elementwise_affine,
    lu_affine,
    triangular_affine,
)
from .continuous import (
    ContinuousFlow,
    VelocityField,
    continuous_flow,
    flow_matching_loss,
)
from .coupling import (
    AdditiveCoupling,
    AffineCoupling,
    Coupling,
    PiecewiseLinearCoupling,
    coupling_flow,
)
from .elementwise import SinhArcsinh, sinh_arcsinh
from .masks import alternating_mask, checkerboard_mask, half_mask
from .permutation import Permutation, ReversePermutation
from .piecewise import PiecewiseLinear, piecewise_linear
from .planar import (
    PlanarFlow,
    constrained_u,
    planar_forward,
    planar_inverse,
    solve_planar_projection,
)
from .radial import RadialFlow, radial_forward, radial_inverse

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "ContinuousFlow",
    "Coupling",
    "ElementwiseAffine",
    "LUAffine",
    "Permutation",
    "PiecewiseLinear",
    "PiecewiseLinearCoupling",
    "PlanarFlow",
    "RadialFlow",
    "ReversePermutation",
    "SinhArcsinh",
    "TriangularAffine",
    "VelocityField",
    "alternating_mask",
    "checkerboard_mask",
    "constrained_u",
    "continuous_flow",
    "coupling_flow",
    "elementwise_affine",
    "flow_matching_loss",
    "half_mask",
    "lu_affine",
    "piecewise_linear",
    "planar_forward",
    "planar_inverse",
    "radial_forward",
    "radial_inverse",
    "sinh_arcsinh",
    "solve_planar_projection",
    "triangular_affine",
]
