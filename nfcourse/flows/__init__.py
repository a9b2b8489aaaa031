"""The flows of the course, one module per family, named like its chapter."""

from .affine import ElementwiseAffine, elementwise_affine
from .elementwise import SinhArcsinh, sinh_arcsinh

# chapter 2 (affine, more layers): add exports below this line

# chapter 3 (planar, radial): add exports below this line

# chapters 4-5 (piecewise-linear, coupling): add exports below this line
from .piecewise import PiecewiseLinear, Uniform01, piecewise_linear
from .affine import LUAffine, TriangularAffine, lu_affine, triangular_affine  # noqa: E402
from .planar import (PlanarFlow, constrained_u, planar_forward, planar_inverse,  # noqa: E402
                     solve_planar_projection)
from .radial import RadialFlow, radial_forward, radial_inverse  # noqa: E402
from .coupling import (ActNorm, AdditiveCoupling, AffineCoupling, Coupling,  # noqa: E402
                       Permutation, PiecewiseLinearCoupling, ReversePermutation,
                       coupling_flow)
