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
``actnorm``         5, 9     ``ActNorm`` (points and images), ``ActNorm2d``
``made``            7        ``MADE`` (masked autoregressive conditioner), ``made_masks``
``autoregressive``  7, 12    ``MAF``, ``IAF``, ``CausalTransformer``, ``maf_flow``,
                             ``iaf_flow``, ``transformer_flow`` (``context_dim``: the
                             conditional MAF of chapter 12)
``spline``          8        ``RationalQuadraticSpline``, ``RationalQuadraticCoupling``,
                             ``RationalQuadraticAutoregressive``, ``spline_flow``
``image``           9        ``Logit``, ``Squeeze``, ``InvertibleConv1x1``,
                             ``ConvAffineCoupling``, ``MultiScale``; ``FlatToImage``
                             (imported from the module)
``glow``            9        ``glow``, ``flat_image_flow``
``dequantization``  9        ``VariationalDequantizer``, ``dequantization_nll``,
                             ``pixels_to_levels``
``continuous``      10       ``ContinuousFlow``, ``VelocityField``, ``continuous_flow``,
                             ``flow_matching_loss`` (torchdiffeq's solvers)
==================  =======  ==========================================================

The base distributions (``StandardNormal``, ``DiagonalNormal``, ``Uniform01``) live in
``nfcourse.distributions``.
"""

from .actnorm import ActNorm, ActNorm2d
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
from .dequantization import VariationalDequantizer, dequantization_nll, pixels_to_levels
from .elementwise import SinhArcsinh, sinh_arcsinh
from .glow import flat_image_flow, glow
from .image import (
    ConvAffineCoupling,
    InvertibleConv1x1,
    Logit,
    MultiScale,
    Squeeze,
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
from .spline import (
    RationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    RationalQuadraticSpline,
    rational_quadratic_spline,
    spline_flow,
)

__all__ = [
    "ActNorm",
    "ActNorm2d",
    "AdditiveCoupling",
    "AffineCoupling",
    "ContinuousFlow",
    "CausalTransformer",
    "ConvAffineCoupling",
    "Coupling",
    "ElementwiseAffine",
    "IAF",
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
    "RationalQuadraticAutoregressive",
    "RationalQuadraticCoupling",
    "RationalQuadraticSpline",
    "ReversePermutation",
    "SinhArcsinh",
    "Squeeze",
    "TriangularAffine",
    "VariationalDequantizer",
    "VelocityField",
    "alternating_mask",
    "checkerboard_mask",
    "constrained_u",
    "continuous_flow",
    "coupling_flow",
    "elementwise_affine",
    "glow",
    "dequantization_nll",
    "flat_image_flow",
    "pixels_to_levels",
    "flow_matching_loss",
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
    "rational_quadratic_spline",
    "sinh_arcsinh",
    "solve_planar_projection",
    "spline_flow",
    "transformer_flow",
    "triangular_affine",
]
