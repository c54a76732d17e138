"""Activations and their hand-written g': hand values, autodiff, finite differences."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgd.nn import activations

TOL_F64 = 1e-12      # a closed form evaluated in float64
TOL_AUTODIFF = 1e-12  # hand g' vs jax.grad of g, float64
TOL_FD = 1e-7         # hand g' vs central differences, h = 1e-6 (O(h^2) + O(eps/h))

LN3 = math.log(3.0)
ATANH_HALF = math.atanh(0.5)

# (name, z, g(z), g'(z)), each computed by hand:
#   sigmoid(ln 3) = 1 / (1 + 1/3) = 3/4,  sigmoid' = 3/4 * 1/4 = 3/16
#   tanh(atanh 1/2) = 1/2,  tanh' = 1 - 1/4 = 3/4
#   relu'(0) = 0 (the subgradient jax.nn.relu takes), leaky_relu'(0) = 1
HAND = [
    ("sigmoid", 0.0, 0.5, 0.25),
    ("sigmoid", LN3, 0.75, 0.1875),
    ("tanh", 0.0, 0.0, 1.0),
    ("tanh", ATANH_HALF, 0.5, 0.75),
    ("relu", 2.0, 2.0, 1.0),
    ("relu", -3.0, 0.0, 0.0),
    ("relu", 0.0, 0.0, 0.0),
    ("leaky_relu", 2.0, 2.0, 1.0),
    ("leaky_relu", -3.0, -0.03, 0.01),
    ("leaky_relu", 0.0, 0.0, 1.0),
    ("identity", -1.5, -1.5, 1.0),
]
ELEMENTWISE = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
# a grid holding the kink z = 0 exactly, and values on both sides
GRID = np.array([[-4.0, -1.0, -0.25, 0.0], [0.0, 0.3, 1.0, 5.0]])


@pytest.mark.parametrize("name,z,g,dg", HAND)
def test_value_and_derivative_by_hand(name, z, g, dg):
    act = activations.get(name)
    z = jnp.array([[z]], jnp.float64)
    np.testing.assert_allclose(act.fn(z), [[g]], rtol=TOL_F64, atol=TOL_F64)
    np.testing.assert_allclose(act.deriv(z), [[dg]], rtol=TOL_F64, atol=TOL_F64)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_equals_autodiff_including_the_kink(name):
    """g' written by hand equals jax.grad(g) everywhere, also at z = 0 where
    relu and leaky_relu pick a subgradient: backprop must agree with autodiff."""
    act = activations.get(name)
    z = jnp.asarray(GRID)
    auto = jax.vmap(jax.vmap(jax.grad(lambda s: act.fn(s))))(z)
    chex.assert_trees_all_close(act.deriv(z), auto, rtol=TOL_AUTODIFF, atol=TOL_AUTODIFF)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_equals_finite_differences_away_from_kinks(name):
    act = activations.get(name)
    z = jnp.asarray(GRID[GRID != 0.0])
    h = 1e-6
    fd = (act.fn(z + h) - act.fn(z - h)) / (2 * h)
    np.testing.assert_allclose(act.deriv(z), fd, rtol=TOL_FD, atol=TOL_FD)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_vjp_is_dA_times_derivative(name):
    act = activations.get(name)
    z = jnp.asarray(GRID)
    da = jnp.arange(1.0, 9.0).reshape(2, 4)
    chex.assert_trees_all_close(act.vjp(z, act.fn(z), da), da * act.deriv(z), rtol=TOL_F64)


def test_softmax_by_hand_and_columns_sum_to_one():
    # softmax([0, ln 3]) = [1, 3] / 4 per column; a shift by a constant changes nothing
    z = jnp.array([[0.0, 100.0, -7.0], [LN3, 100.0 + LN3, -7.0 + LN3]])
    a = activations.softmax(z)
    np.testing.assert_allclose(a, [[0.25] * 3, [0.75] * 3], rtol=TOL_F64)
    np.testing.assert_allclose(jnp.sum(activations.softmax(jnp.asarray(GRID)), axis=0), 1.0, rtol=TOL_F64)


def test_softmax_vjp_equals_autodiff():
    act = activations.get("softmax", output=True)
    assert act.deriv is None  # softmax is not elementwise: only its vjp exists
    z = jnp.asarray(GRID)
    da = jnp.array([[1.0, -2.0, 0.5, 3.0], [0.25, 4.0, -1.0, 2.0]])
    a, pullback = jax.vjp(lambda s: jax.nn.softmax(s, axis=0), z)
    chex.assert_trees_all_close(act.vjp(z, a, da), pullback(da)[0], rtol=TOL_AUTODIFF, atol=TOL_AUTODIFF)


@pytest.mark.parametrize(
    "alias,canonical",
    [("logsig", "sigmoid"), ("tansig", "tanh"), ("purelin", "identity"), ("linear", "identity")],
)
def test_aliases_are_the_canonical_activation(alias, canonical):
    a, c = activations.get(alias), activations.get(canonical)
    assert a is c and a.name == canonical
    z = jnp.asarray(GRID)
    chex.assert_trees_all_equal(a.fn(z), c.fn(z))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"activation must be one of .*'sigmoid'.*'logsig'.*got 'swish'"):
        activations.get("swish")


def test_softmax_is_for_the_output_layer_only():
    with pytest.raises(ValueError, match=r"hidden must be one of .*got 'softmax'") as e:
        activations.get("softmax", argument="hidden")
    assert "'softmax'" not in str(e.value).split(";")[0]  # not offered as a valid hidden name
    assert activations.get("softmax", output=True).name == "softmax"
