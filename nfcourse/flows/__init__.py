"""The flows of the course, one module per family, named like its chapter.

=================  =======  ==========================================================
module             chapter  transforms
=================  =======  ==========================================================
``elementwise``    1        ``SinhArcsinh``
``affine``         2        ``ElementwiseAffine``, ``TriangularAffine``, ``LUAffine``
``planar``         3        ``PlanarFlow`` (with a numerical inverse)
``radial``         3        ``RadialFlow``
``piecewise``      4        ``PiecewiseLinear`` (and the base ``Uniform01``)
``coupling``       5        ``AdditiveCoupling``, ``AffineCoupling``,
                            ``PiecewiseLinearCoupling``, ``Permutation``,
                            ``ReversePermutation``, ``ActNorm``, ``coupling_flow``
=================  =======  ==========================================================
"""

from .affine import (
    ElementwiseAffine,
    LUAffine,
    TriangularAffine,
    elementwise_affine,
    lu_affine,
    triangular_affine,
)
from .coupling import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Coupling,
    Permutation,
    PiecewiseLinearCoupling,
    ReversePermutation,
    coupling_flow,
)
from .elementwise import SinhArcsinh, sinh_arcsinh
from .piecewise import PiecewiseLinear, Uniform01, piecewise_linear
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
    "Uniform01",
    "constrained_u",
    "coupling_flow",
    "elementwise_affine",
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
