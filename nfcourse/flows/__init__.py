"""The flows of the course, one module per family, named like its chapter.

==================  =======  ==========================================================
module              chapter  transforms
==================  =======  ==========================================================
``elementwise``     1        ``SinhArcsinh``
``affine``          2        ``ElementwiseAffine``, ``TriangularAffine``, ``LUAffine``
``planar``          3        ``PlanarFlow`` (with a numerical inverse)
``radial``          3        ``RadialFlow``
``piecewise``       4        ``PiecewiseLinear``
``coupling``        5        ``AdditiveCoupling``, ``AffineCoupling``,
                             ``PiecewiseLinearCoupling``, ``coupling_flow``
``masks``           5        ``half_mask``, ``alternating_mask``, ``checkerboard_mask``
``permutation``     5        ``Permutation``, ``ReversePermutation``
``actnorm``         5        ``ActNorm``
``made``            7        ``MADE`` (masked autoregressive conditioner), ``made_masks``
``autoregressive``  7        ``MAF``, ``IAF``, ``CausalTransformer``, ``maf_flow``,
                             ``iaf_flow``, ``transformer_flow``
``image``           9        ``Logit``, ``Squeeze``, ``ActNorm2d``, ``InvertibleConv1x1``,
                             ``ConvAffineCoupling``, ``MultiScale``, ``ImageFlow``,
                             ``VariationalDequantizer``, ``glow``
==================  =======  ==========================================================

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
from .autoregressive import (
    IAF,
    MAF,
    CausalTransformer,
    iaf_flow,
    maf_flow,
    transformer_flow,
)
from .coupling import (
    AdditiveCoupling,
    AffineCoupling,
    Coupling,
    PiecewiseLinearCoupling,
    coupling_flow,
)
from .elementwise import SinhArcsinh, sinh_arcsinh
from .image import (
    ActNorm2d,
    ConvAffineCoupling,
    ImageFlow,
    InvertibleConv1x1,
    Logit,
    MultiScale,
    Squeeze,
    VariationalDequantizer,
    glow,
)
from .made import MADE, made_masks
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
    "ActNorm2d",
    "AdditiveCoupling",
    "AffineCoupling",
    "CausalTransformer",
    "ConvAffineCoupling",
    "Coupling",
    "ElementwiseAffine",
    "IAF",
    "ImageFlow",
    "InvertibleConv1x1",
    "LUAffine",
    "Logit",
    "MADE",
    "MAF",
    "MultiScale",
    "Permutation",
    "PiecewiseLinear",
    "PiecewiseLinearCoupling",
    "PlanarFlow",
    "RadialFlow",
    "ReversePermutation",
    "SinhArcsinh",
    "Squeeze",
    "TriangularAffine",
    "VariationalDequantizer",
    "alternating_mask",
    "checkerboard_mask",
    "constrained_u",
    "coupling_flow",
    "elementwise_affine",
    "glow",
    "half_mask",
    "iaf_flow",
    "lu_affine",
    "made_masks",
    "maf_flow",
    "piecewise_linear",
    "planar_forward",
    "planar_inverse",
    "radial_forward",
    "radial_inverse",
    "sinh_arcsinh",
    "solve_planar_projection",
    "transformer_flow",
    "triangular_affine",
]
