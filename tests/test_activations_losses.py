"""Activations and losses: stability at |z| up to 1e4, the course's conventions, clear errors."""
import warnings

import numpy as np
import pytest

from fastdnn.activations import ACTIVATIONS as REGISTRY, get_activation
from fastdnn.losses import get_loss

from support import ACTIVATIONS, DTYPES, OUTPUTS

EXTREME = np.array([[-1e4, -1e3, -100.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 100.0, 1e3, 1e4]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS + ["softmax"])
def test_activation_is_finite_and_silent_for_huge_inputs(backend, dtype, name):
    act = get_activation(name)
    Z = backend.asarray(np.vstack([EXTREME, -EXTREME]).astype(dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            A = backend.activation_forward(act, Z)
            dZ = backend.activation_backward(act, backend.asarray(np.ones(Z.shape, dtype)), Z, A)
    assert A.dtype == np.dtype(dtype) and dZ.dtype == np.dtype(dtype)
    assert np.isfinite(backend.to_numpy(A)).all() and np.isfinite(backend.to_numpy(dZ)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_sigmoid_values_are_exact_limits(backend, dtype):
    A = backend.to_numpy(backend.activation_forward(get_activation("sigmoid"),
                                                    backend.asarray(np.array([[-1e4, 1e4]], dtype))))
    assert A[0, 0] == 0.0 and A[0, 1] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,loss_name", [("sigmoid", "bce"), ("softmax", "ce")])
def test_cost_is_finite_for_saturated_outputs(backend, dtype, output, loss_name):
    act = get_activation(output)
    loss = get_loss(loss_name, act)
    Z = np.array([[1e4, -1e4, 50.0], [-1e4, 1e4, -50.0]], dtype)
    Y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype)
    if loss_name == "bce":
        Z, Y = Z[:1], Y[:1]
    Zd = backend.asarray(Z)
    A = backend.activation_forward(act, Zd)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        cost = backend.scalar(backend.loss_cost(loss, Zd, A, backend.asarray(Y)))
    # every example is wrong by a margin of about 1e4 (or 50): the mean cost is that margin / m
    expected = (1e4 + 1e4 + 50.0) / 3 if loss_name == "bce" else (2e4 + 2e4 + 100.0) / 3
    assert np.isfinite(cost) and cost == pytest.approx(expected, rel=1e-6)


def test_relu_derivative_at_zero_is_zero(backend):
    Z = backend.asarray(np.zeros((2, 3)))
    dZ = backend.activation_backward(get_activation("relu"), backend.asarray(np.ones((2, 3))), Z, Z)
    assert (backend.to_numpy(dZ) == 0).all()


def test_leaky_relu_slope_is_a_parameter(backend):
    from fastdnn.activations import LeakyReLU
    act = LeakyReLU(slope=0.2)
    A = backend.to_numpy(backend.activation_forward(act, backend.asarray(np.array([[-2.0, 3.0]]))))
    np.testing.assert_array_equal(A, [[-0.4, 3.0]])
    assert act != get_activation("leaky_relu") and act.key == ("leaky_relu", 0.2)
    with pytest.raises(ValueError, match="slope"):
        LeakyReLU(slope=float("nan"))


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("ftype", [np.float32, np.float64])
def test_scalar_forms_equal_the_vectorized_ones(name, ftype):
    act = get_activation(name)
    g, dg = act.scalar(ftype)
    Z = np.array([-np.inf, -1e4, -30.0, -1.5, -1e-3, 0.0, 1e-3, 0.7, 30.0, 1e4, np.inf, np.nan], ftype)
    A = act.forward(np, Z.reshape(1, -1)).ravel()
    dZ = act.backward(np, np.ones_like(Z).reshape(1, -1), Z.reshape(1, -1), A.reshape(1, -1)).ravel()
    for z, a, d in zip(Z, A, dZ):      # NaN in, NaN out, as the vectorized forms do: the cost check must see it
        assert type(g(z)) in (ftype, float) and g(z) == pytest.approx(float(a), rel=1e-6, abs=1e-30, nan_ok=True)
        assert dg(z, ftype(a)) == pytest.approx(float(d), rel=1e-6, abs=1e-30, nan_ok=True)


def test_unknown_activation_lists_the_choices():
    with pytest.raises(ValueError) as e:
        get_activation("rleu")
    assert str(e.value) == ("unknown activation 'rleu'; expected one of 'leaky_relu', 'linear', "
                            "'relu', 'sigmoid', 'softmax', 'tanh'")
    assert sorted(REGISTRY) == sorted(ACTIVATIONS + ["softmax"])


def test_loss_defaults_and_mismatches():
    assert get_loss(None, get_activation("sigmoid")).name == "bce"
    assert get_loss(None, get_activation("softmax")).name == "ce"
    assert get_loss(None, get_activation("linear")).name == "mse"
    with pytest.raises(ValueError, match="'bce' does not go with output activation 'softmax'"):
        get_loss("bce", get_activation("softmax"))
    with pytest.raises(ValueError, match="unknown loss 'xent'; expected one of 'bce', 'ce', 'mse'"):
        get_loss("xent", get_activation("sigmoid"))
    assert {o for o, _ in OUTPUTS} >= {"sigmoid", "softmax", "linear"}


@pytest.mark.parametrize("loss_name", ["mse", "bce"])
def test_a_float32_cost_whose_sum_overflows_but_mean_fits_is_finite_everywhere(device, loss_name):
    """The sum over examples accumulates in float64 on every path (the compiled kernels did; NumPy's float32
    sum overflowed first): four examples of loss ~1.1e38 each, whose float32 sum is inf and whose mean is
    not, cost the same finite J on every device, and a fit's step on them does not stop."""
    from fastdnn import Network
    name, _ = device
    output = "linear" if loss_name == "mse" else "sigmoid"
    w = 1.5e19 if loss_name == "mse" else -1.1e38            # ½ w² or |w| per example: ~1.1e38
    net = Network.from_parameters({"W1": np.array([[w]]), "b1": np.zeros((1, 1))}, output_activation=output,
                                  loss=loss_name, device=name, dtype="float32")
    X, Y = np.ones((1, 4)), np.ones((1, 4))
    expected = 0.5 * w * w if loss_name == "mse" else -w
    assert float(net.cost(X, Y)) == pytest.approx(expected, rel=1e-6)
    history = net.fit(X, Y, iterations=1, learning_rate=1e-30, verbose=0)
    assert history[0].cost == pytest.approx(expected, rel=1e-6)
