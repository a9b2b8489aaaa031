"""Every bad input gets a TypeError or ValueError that names the argument, what was
expected, what came in and the fix; and no silent wrong answer (nfcourse.validation)."""

import numpy as np
import pytest
import torch

import nfcourse
import nfcourse as nf
from nfcourse import densities, images, vae

D64 = torch.float64


def _flow(dtype=torch.float32):
    return nf.Flow(nf.ElementwiseAffine(2)).to(dtype)


# --- counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, error, message",
    [
        (-1, ValueError, r"n must be a positive integer.*got -1"),
        (0, ValueError, r"n must be a positive integer.*got 0"),
        (2.5, TypeError, r"n must be a positive integer.*got 2\.5 of type float"),
        (3.0, TypeError, r"use n=3"),
        (None, TypeError, r"n must be a positive integer.*got None"),
        (True, TypeError, r"got True"),
    ],
)
def test_sample_counts_are_checked_everywhere(n, error, message):
    for sampler in (
        _flow().sample,
        nf.StandardNormal(2).sample,
        nf.DiagonalNormal(2).sample,
        nf.Uniform01(2).sample,
        densities.GaussianRing().sample,
        lambda n: _flow().sample_and_log_prob(n),
    ):
        with pytest.raises(error, match=message):
            sampler(n)


def test_numpy_integers_count_as_integers():
    assert _flow().sample(np.int64(3)).shape == (3, 2)


# --- empty batches and empty sample sizes: an error, not a NaN --------------------------------


def test_forward_kl_of_an_empty_batch_is_an_error_not_nan():
    with pytest.raises(ValueError, match=r"x is an empty batch \(shape \(0, 2\)\)"):
        _flow().forward_kl(torch.zeros(0, 2))


def test_reverse_kl_with_no_samples_is_an_error_not_nan():
    with pytest.raises(ValueError, match="n must be a positive integer.*got 0"):
        _flow().reverse_kl(lambda x: -(x**2).sum(1), n=0)
    with pytest.raises(TypeError, match="log_target must be a function"):
        _flow().reverse_kl(torch.zeros(3), n=3)


def test_batch_size_zero_is_an_argument_error_not_a_divergence():
    data = torch.randn(20, 2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer.*got 0"):
        nf.fit_maximum_likelihood(_flow(), data, steps=2, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        nf.fit_reverse_kl(_flow(), lambda x: -(x**2).sum(1), steps=2, n_samples=0, progress=False)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        nf.fit_maximum_likelihood(_flow(), data, steps=0, progress=False)


def test_numpy_data_for_the_fit_functions_gets_a_conversion_hint():
    data = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(
        TypeError,
        match=r"data must be a torch.Tensor.*got ndarray.*"
        r"torch.as_tensor\(data, dtype=torch.float32\)",
    ):
        nf.fit_maximum_likelihood(_flow(), data, steps=2, progress=False)
    with pytest.raises(TypeError, match="flow must be an nfcourse.Flow"):
        nf.fit_maximum_likelihood(torch.nn.Linear(2, 2), torch.zeros(4, 2), steps=2)
    with pytest.raises(TypeError, match=r"images must be a torch.Tensor.*got ndarray.*as_tensor"):
        nfcourse.fit_vae(vae.FlowPosteriorVAE(2, data_dim=4, hidden=4), np.zeros((3, 4)), steps=1)


# --- one dtype policy -------------------------------------------------------------------------


def test_float16_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"float32 or float64.*got torch.float16.*\.float\(\)"):
        nf.check_batch(torch.zeros(2, 2, dtype=torch.float16), 2, "x")


@pytest.mark.parametrize(
    "layer",
    [
        lambda: nf.ElementwiseAffine(2),
        lambda: nf.ActNorm(2),
        lambda: nf.TriangularAffine(2),
        lambda: nf.LUAffine(2),
        lambda: nf.PlanarFlow(2),
        lambda: nf.RadialFlow(2),
        lambda: nf.SinhArcsinh(2),
        lambda: nf.PiecewiseLinear(2, 4),
        lambda: nf.AffineCoupling(nf.half_mask(2)),
    ],
)
def test_float64_data_into_a_float32_layer_names_both_dtypes_and_the_fix(layer):
    t = layer().eval()
    x = torch.rand(3, 2, dtype=D64)
    for fn in (t.forward, t.inverse):
        with pytest.raises(
            TypeError,
            match=r"torch.float64 but .* torch.float32 parameters; "
            r"convert the input with \.float\(\) or the model "
            r"with \.double\(\)",
        ):
            fn(x)
    t = t.double()
    for fn in (t.forward, t.inverse):
        out, log_abs_det = fn(x)
        assert out.dtype == log_abs_det.dtype == D64


def test_a_flow_checks_the_dtype_once_at_its_entry_points():
    flow = _flow()
    for fn in (flow.log_prob, flow.forward_kl):
        with pytest.raises(TypeError, match=r"x is torch.float64 but the flow has torch.float32"):
            fn(torch.zeros(3, 2, dtype=D64))
    with pytest.raises(TypeError, match="torch.float64 but the flow"):
        nf.fit_maximum_likelihood(flow, torch.zeros(8, 2, dtype=D64), steps=1, progress=False)
    with pytest.raises(TypeError, match="but StandardNormal has torch.float32"):
        nf.StandardNormal(2).log_prob(torch.zeros(3, 2, dtype=D64))


def test_flow_refuses_a_base_of_another_kind_or_dimension():
    with pytest.raises(TypeError, match="base must be an nfcourse BaseDistribution"):
        nf.Flow(nf.ElementwiseAffine(2), base=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="dimension 2 but the base in dimension 3"):
        nf.Flow(nf.ElementwiseAffine(2), base=nf.StandardNormal(3))


# --- toy densities and data sets: no silent wrong answer -------------------------------------


def test_toy_density_samples_refuse_an_integer_dtype():
    with pytest.raises(TypeError, match=r"dtype must be torch.float32 or torch.float64.*int64"):
        densities.GaussianRing().sample(10, dtype=torch.int64)


@pytest.mark.parametrize("fraction", [1.5, 1.0, 0.0, -0.2, 0.0001, "0.2", None])
def test_load_digits_refuses_a_test_fraction_outside_zero_one(fraction):
    with pytest.raises(
        ValueError,
        match=r"test_fraction must be a number strictly between "
        r"0 and 1",
    ):
        images.load_digits(test_fraction=fraction)


def test_load_mnist_refuses_nan_pixels(tmp_path):
    x = np.full((3, 28, 28), 0.5, dtype=np.float32)
    x[1, 4, 4] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=x, x_test=x[:1])
    with pytest.raises(ValueError, match=r"x_train: images \[1\] hold NaN"):
        images.load_mnist(tmp_path / "nan.npz")


def test_binarise_refuses_empty_and_non_finite_batches():
    with pytest.raises(ValueError, match="x is empty"):
        images.binarise(torch.zeros(0, 784))
    with pytest.raises(ValueError, match="NaN or inf"):
        images.binarise(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(TypeError, match="float32 or float64"):
        images.binarise(torch.zeros(2, 3, dtype=torch.uint8))


# --- the VAE ----------------------------------------------------------------------------------


def _vae():
    torch.manual_seed(0)
    return vae.FlowPosteriorVAE(2, n_flows=2, hidden=8, data_dim=16).double()


def test_vae_functions_refuse_an_empty_batch():
    model, empty = _vae(), torch.zeros(0, 16, dtype=D64)
    for fn in (
        model.elbo,
        model.loss,
        model.reconstruct,
        lambda x: model.log_weights(x, 3),
        lambda x: model.log_joint(x, torch.zeros(0, 2, dtype=D64)),
        lambda x: model.posterior_log_prob(x, torch.zeros(0, 2, dtype=D64)),
    ):
        with pytest.raises(ValueError, match=r"x is an empty batch"):
            fn(empty)


def test_vae_sample_counts_are_checked():
    model, x = _vae(), torch.rand(3, 16, dtype=D64)
    with pytest.raises(ValueError, match="n_samples must be a positive integer.*got 0"):
        model.log_weights(x, n_samples=0)
    with pytest.raises(TypeError, match="n_samples must be a positive integer"):
        model.elbo(x, n_samples=2.5)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.sample(-1)


@pytest.mark.parametrize("shape", [(3, 5), (2, 3), (3,), (4, 2, 2)])
def test_latents_of_the_wrong_shape_name_the_expected_shape(shape):
    model, x = _vae(), torch.rand(3, 16, dtype=D64)
    z = torch.zeros(shape, dtype=D64)
    for fn in (model.posterior_log_prob, model.log_joint):
        with pytest.raises(ValueError, match=r"z must have shape \(\*, 3, 2\).*got shape"):
            fn(x, z)


def test_vae_names_both_dtypes():
    model, x = _vae(), torch.rand(3, 16)
    with pytest.raises(TypeError, match=r"x is torch.float32 but the model has torch.float64"):
        model.elbo(x)
    with pytest.raises(TypeError, match=r"z is torch.float32 but x is torch.float64"):
        model.log_joint(x.double(), torch.zeros(3, 2))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda v: nf.distributions.StandardNormal(v), "dim"),
        (lambda v: nf.flows.permutation.ReversePermutation(v), "dim"),
        (lambda v: nf.flows.piecewise.PiecewiseLinear(2, v), "num_bins"),
        (lambda v: nf.coupling_flow("affine", 2, v), "n_layers"),
        (lambda v: nf.coupling_flow("affine", 2, 2, hidden=(8, v)), r"hidden\[1\]"),
        (lambda v: nf.PlanarFlow(2, max_iter=v), "max_iter"),
        (lambda v: images.bits_per_dim(1.0, v, 17), "dim"),
        (lambda v: images.dequantize(torch.zeros(2, 3), v), "levels"),
    ],
)
def test_layer_counts_reject_non_integers_and_zero_naming_the_argument(build, name):
    with pytest.raises(TypeError, match=rf"{name} must be a positive integer.*got 2\.5"):
        build(2.5)
    with pytest.raises(ValueError, match=rf"{name} must be a positive integer.*got 0"):
        build(0)
