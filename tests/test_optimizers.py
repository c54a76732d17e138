"""Optimizers against numpy transcriptions of their published rules, optax,
convergence on hard quadratics, dtypes, and argument checks."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import fgd

STEPS = 50
# float32 follows the rule to rounding (about 1e-7 a step) over 50 steps;
# float64 is checked far tighter than any mistake in a rule could hide.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def decay_schedule(t):
    """The closed form behind fgd.schedules.exponential_decay(0.1, 1, 0.97)."""
    return 0.1 * 0.97 ** t


# --- numpy transcriptions of the rules (t = 1, 2, ...; lr(t - 1) as optax) --

def lr_value(lr, step, dtype):
    return dtype(lr(step) if callable(lr) else lr)


def ref_sgd(lr, momentum=0.0, nesterov=False):
    def run(p, grads, dtype):
        v = {k: np.zeros_like(x) for k, x in p.items()}
        out = []
        for t, g in enumerate(grads):
            rate = lr_value(lr, t, dtype)
            v = {k: momentum * v[k] + g[k] for k in g}
            d = {k: g[k] + momentum * v[k] for k in g} if nesterov else v
            out.append({k: -rate * d[k] for k in g})
        return out
    return run


def ref_adagrad(lr, s0=0.1, eps=1e-7):
    def run(p, grads, dtype):
        s = {k: np.full_like(x, s0) for k, x in p.items()}
        out = []
        for t, g in enumerate(grads):
            rate = lr_value(lr, t, dtype)
            s = {k: s[k] + g[k] ** 2 for k in g}
            out.append({k: -rate * g[k] / np.sqrt(s[k] + eps) for k in g})
        return out
    return run


def ref_rmsprop(lr, decay=0.9, eps=1e-8):
    def run(p, grads, dtype):
        nu = {k: np.zeros_like(x) for k, x in p.items()}
        out = []
        for t, g in enumerate(grads):
            rate = lr_value(lr, t, dtype)
            nu = {k: decay * nu[k] + (1 - decay) * g[k] ** 2 for k in g}
            out.append({k: -rate * g[k] / np.sqrt(nu[k] + eps) for k in g})
        return out
    return run


def ref_adam(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decayed=("W", "b")):
    """Kingma and Ba, Algorithm 1; with weight_decay, Loshchilov and Hutter's
    decoupled decay as optax.adamw writes it: -lr (m_hat/(sqrt(v_hat)+eps) + wd p)."""
    def run(p, grads, dtype):
        m = {k: np.zeros_like(x) for k, x in p.items()}
        v = {k: np.zeros_like(x) for k, x in p.items()}
        p = dict(p)
        out = []
        for t, g in enumerate(grads, start=1):
            rate = lr_value(lr, t - 1, dtype)
            m = {k: b1 * m[k] + (1 - b1) * g[k] for k in g}
            v = {k: b2 * v[k] + (1 - b2) * g[k] ** 2 for k in g}
            m_hat = {k: m[k] / (1 - b1 ** t) for k in g}
            v_hat = {k: v[k] / (1 - b2 ** t) for k in g}
            d = {k: m_hat[k] / (np.sqrt(v_hat[k]) + eps) for k in g}
            d = {k: d[k] + weight_decay * p[k] if k in decayed else d[k] for k in g}
            u = {k: -rate * d[k] for k in g}
            p = {k: p[k] + u[k] for k in g}
            out.append(u)
        return out
    return run


# name: (fgd optimizer, numpy rule, optax optimizer or None)
CASES = {
    "sgd": (lambda: fgd.sgd(0.1), ref_sgd(0.1), lambda o: o.sgd(0.1)),
    "momentum": (lambda: fgd.sgd(0.05, momentum=0.9), ref_sgd(0.05, 0.9),
                 lambda o: o.sgd(0.05, momentum=0.9)),
    "nesterov": (lambda: fgd.sgd(0.05, momentum=0.9, nesterov=True),
                 ref_sgd(0.05, 0.9, True), lambda o: o.sgd(0.05, momentum=0.9, nesterov=True)),
    "sgd_schedule": (lambda: fgd.sgd(fgd.schedules.exponential_decay(0.1, 1, 0.97)),
                     ref_sgd(decay_schedule), lambda o: o.sgd(o.exponential_decay(0.1, 1, 0.97))),
    "adagrad": (lambda: fgd.adagrad(0.1), ref_adagrad(0.1), lambda o: o.adagrad(0.1)),
    "rmsprop": (lambda: fgd.rmsprop(0.01), ref_rmsprop(0.01), lambda o: o.rmsprop(0.01)),
    "adam": (lambda: fgd.adam(1e-2), ref_adam(1e-2), lambda o: o.adam(1e-2)),
    "adam_schedule": (lambda: fgd.adam(fgd.schedules.exponential_decay(0.1, 1, 0.97)),
                      ref_adam(decay_schedule),
                      lambda o: o.adam(o.exponential_decay(0.1, 1, 0.97))),
    "adamw": (lambda: fgd.adamw(1e-2, weight_decay=0.1), ref_adam(1e-2, weight_decay=0.1),
              lambda o: o.adamw(1e-2, weight_decay=0.1)),
    "adamw_masked": (lambda: fgd.adamw(1e-2, weight_decay=0.1, mask=fgd.weights_only),
                     ref_adam(1e-2, weight_decay=0.1, decayed=("W",)), None),
}


def problem(dtype, seed=0):
    """Params {"W": (3, 2), "b": (3, 1)} and STEPS random gradients, in dtype."""
    rng = np.random.default_rng(seed)
    params = {"W": rng.normal(size=(3, 2)).astype(dtype), "b": rng.normal(size=(3, 1)).astype(dtype)}
    grads = [{k: rng.normal(size=x.shape).astype(dtype) for k, x in params.items()}
             for _ in range(STEPS)]
    return params, grads


def run_fgd(opt, params, grads, update=None):
    update = update or opt.update
    state = opt.init(jax.tree.map(jnp.asarray, params))
    p, out = jax.tree.map(jnp.asarray, params), []
    for g in grads:
        u, state = update(jax.tree.map(jnp.asarray, g), state, p)
        p = fgd.apply_updates(p, u)
        out.append(u)
    return out


class TestPublishedRules(chex.TestCase):
    """Each optimizer, jitted and not, against its rule transcribed in numpy."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(name=sorted(CASES), dtype=(np.float32, np.float64))
    def test_rule(self, name, dtype):
        make, rule, _ = CASES[name]
        params, grads = problem(dtype)
        opt = make()
        got = run_fgd(opt, params, grads, self.variant(opt.update))
        want = rule(params, grads, dtype)
        chex.assert_trees_all_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [n for n in sorted(CASES) if CASES[n][2] is not None])
def test_optax_trajectory(name, dtype):
    optax = pytest.importorskip("optax")
    make, _, make_optax = CASES[name]
    params, grads = problem(dtype, seed=1)
    update = jax.jit(make().update)
    got = run_fgd(make(), params, grads, update)
    want = run_fgd(make_optax(optax), params, grads, jax.jit(make_optax(optax).update))
    # optax evaluates its schedules in float32 even in float64 runs; fgd keeps
    # float64 (and matches the float64 rule in test_rule).
    tol = TOL[np.float32] if name.endswith("schedule") else TOL[dtype]
    chex.assert_trees_all_close(got, want, **tol)


# --- convergence ----------------------------------------------------------

def quadratic(x):
    """0.5 (x0^2 + 100 x1^2): condition number 100, minimum 0 at the origin."""
    return 0.5 * (x[0] ** 2 + 100.0 * x[1] ** 2)


def rosenbrock(x):
    """(1 - x0)^2 + 100 (x1 - x0^2)^2: a curved valley, minimum 0 at (1, 1)."""
    return (1 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def minimise(f, opt, x0, steps):
    @jax.jit
    def run(x):
        def step(carry, _):
            x, state = carry
            updates, state = opt.update(jax.grad(f)(x), state, x)
            return (fgd.apply_updates(x, updates), state), None
        return jax.lax.scan(step, (x, opt.init(x)), None, length=steps)[0][0]
    return run(x0)


# (quadratic optimizer, Rosenbrock optimizer, steps), tuned by hand. The
# tolerances on the distance to the minimiser (1e-6 on the quadratic, 1e-3 on
# Rosenbrock) sit 50x or more above what the runs reach (about 2e-5 at worst,
# plain GD crawling along Rosenbrock's nearly flat valley floor), so they
# survive rounding differences between machines while still failing a rule
# that descends the wrong way; the exact rules are checked above. Adam-type
# methods with a constant rate end in a limit cycle of size about lr, so they
# get a decaying rate.
CONVERGENCE = {
    "sgd": (lambda: fgd.sgd(0.019), lambda: fgd.sgd(1.5e-3), 20000),
    "momentum": (lambda: fgd.sgd(0.01, momentum=0.9), lambda: fgd.sgd(1e-3, momentum=0.9), 20000),
    "nesterov": (lambda: fgd.sgd(0.01, momentum=0.9, nesterov=True),
                 lambda: fgd.sgd(1e-3, momentum=0.9, nesterov=True), 20000),
    "adagrad": (lambda: fgd.adagrad(0.5), lambda: fgd.adagrad(0.5), 20000),
    "rmsprop": (lambda: fgd.rmsprop(fgd.schedules.exponential_decay(0.01, 1000, 0.5)),
                lambda: fgd.rmsprop(fgd.schedules.exponential_decay(1e-3, 2000, 0.7)), 20000),
    "adam": (lambda: fgd.adam(fgd.schedules.exponential_decay(0.05, 1000, 0.5)),
             lambda: fgd.adam(fgd.schedules.exponential_decay(0.02, 2000, 0.7)), 20000),
    "adamw": (lambda: fgd.adamw(fgd.schedules.exponential_decay(0.05, 1000, 0.5), weight_decay=1e-4),
              lambda: fgd.adamw(fgd.schedules.exponential_decay(0.02, 2000, 0.7),
                                weight_decay=1e-4), 20000),
}


@pytest.mark.parametrize("name", sorted(CONVERGENCE))
def test_minimises_ill_conditioned_quadratic(name):
    make_quadratic, _, steps = CONVERGENCE[name]
    x = minimise(quadratic, make_quadratic(), jnp.array([1.0, 1.0]), steps)
    assert float(jnp.linalg.norm(x)) < 1e-6, (name, x)


@pytest.mark.parametrize("name", sorted(CONVERGENCE))
def test_minimises_rosenbrock(name):
    _, make_rosenbrock, steps = CONVERGENCE[name]
    x = minimise(rosenbrock, make_rosenbrock(), jnp.array([-1.2, 1.0]), steps)
    assert float(jnp.linalg.norm(x - 1.0)) < 1e-3, (name, x)


# --- dtypes and edge cases -------------------------------------------------

ALL = {name: make for name, (make, _, _) in CASES.items()}


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", sorted(ALL))
def test_dtype_kept_through_two_jitted_steps(name, dtype):
    opt = ALL[name]()
    params = {"W": jnp.full((3, 2), 0.5, dtype), "b": jnp.zeros((3, 1), dtype)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(grads, state, params)
        return fgd.apply_updates(params, updates), state, updates

    for _ in range(2):
        params, state, updates = step(params, state)
    for tree in (params, updates):
        assert all(x.dtype == dtype for x in jax.tree.leaves(tree))
    scalar = jnp.float64 if dtype == jnp.float64 else jnp.float32
    assert state.count.dtype == jnp.int32 and state.count.shape == ()
    assert state.lr.dtype == scalar and state.lr.shape == ()
    moments = [x for f in state._fields if f not in ("count", "lr") for x in jax.tree.leaves(getattr(state, f))]
    assert all(x.dtype == dtype for x in moments)
    chex.assert_tree_all_finite(params)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "adagrad"])
def test_all_zero_low_precision_gradient_gives_finite_updates(name, dtype):
    # In float16 eps = 1e-8 rounds to 0, and 0 / (sqrt(0) + 0) is NaN in
    # libraries that add eps in the param dtype.
    opt = {"adam": fgd.adam(1e-3), "adamw": fgd.adamw(1e-3), "rmsprop": fgd.rmsprop(1e-3),
           "adagrad": fgd.adagrad(1e-3, initial_accumulator_value=0.0)}[name]
    params = [{"W": jnp.ones((4, 3), dtype), "b": jnp.zeros((4, 1), dtype)}]
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = opt.init(params)
    update = jax.jit(opt.update)
    for _ in range(3):
        updates, state = update(zeros, state, params)
        chex.assert_tree_all_finite((updates, state))
        if name != "adamw":  # adamw still decays the weights
            chex.assert_trees_all_equal(updates, zeros)


def test_adamw_weights_only_leaves_biases_alone():
    params = [{"W": jnp.ones((2, 2)), "b": jnp.ones((2, 1))}]
    assert fgd.weights_only(params) == [{"W": True, "b": False}]
    zeros = jax.tree.map(jnp.zeros_like, params)
    opt = fgd.adamw(0.1, weight_decay=0.5, mask=fgd.weights_only)
    updates, _ = opt.update(zeros, opt.init(params), params)
    chex.assert_trees_all_close(updates, [{"W": jnp.full((2, 2), -0.05), "b": jnp.zeros((2, 1))}])


# --- the current learning rate --------------------------------------------

def test_current_lr_follows_a_schedule_inside_wrappers():
    schedule = fgd.schedules.exponential_decay(0.1, 1, 0.5)
    opt = fgd.apply_if_finite(fgd.chain(fgd.clip_by_global_norm(1.0), fgd.adam(schedule)), 3)
    params = jnp.ones(3)
    state = opt.init(params)
    update = jax.jit(opt.update)
    for t in range(4):
        assert math.isclose(float(fgd.current_lr(state)), 0.1 * 0.5 ** t, rel_tol=1e-12)
        _, state = update(jnp.ones(3), state, params)


def test_replacing_lr_in_state_does_not_recompile():
    opt = fgd.sgd(0.1)
    params = jnp.ones(2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = opt.update(jnp.ones(2), state, params)
        return fgd.apply_updates(params, updates), state

    params, state = step(params, opt.init(params))
    params, state = step(params, state._replace(lr=jnp.asarray(0.5, state.lr.dtype)))
    chex.assert_trees_all_close(params, jnp.full(2, 1 - 0.1 - 0.5))


def test_current_lr_without_a_rate_raises():
    with pytest.raises(ValueError, match="lr"):
        fgd.current_lr(fgd.clip_by_value(1.0).init(jnp.ones(2)))


# --- argument checks --------------------------------------------------------

BAD = [
    (lambda: fgd.sgd(-0.1), "lr"),
    (lambda: fgd.sgd(float("nan")), "lr"),
    (lambda: fgd.sgd(0.1, momentum=-0.5), "momentum"),
    (lambda: fgd.sgd(0.1, momentum=1.0), "momentum"),
    (lambda: fgd.adagrad(0.1, initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (lambda: fgd.adagrad(0.1, eps=0.0), "eps"),
    (lambda: fgd.rmsprop(0.1, decay=1.0), "decay"),
    (lambda: fgd.rmsprop(0.1, eps=-1e-8), "eps"),
    (lambda: fgd.adam(0.1, b1=1.5), r"b1 must be in \[0, 1\), got 1.5"),
    (lambda: fgd.adam(0.1, b2=-0.1), "b2"),
    (lambda: fgd.adam(0.1, eps=0.0), "eps"),
    (lambda: fgd.adam(lambda t: -1.0 + 0 * t), "lr"),
    (lambda: fgd.adamw(0.1, weight_decay=-1.0), "weight_decay"),
]


@pytest.mark.parametrize("make, match", BAD)
def test_bad_hyperparameter_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, match", [
    (lambda: fgd.adam("fast"), "lr"),
    (lambda: fgd.sgd(None), "lr"),
    (lambda: fgd.sgd(0.1, nesterov="yes"), "nesterov"),
    (lambda: fgd.adamw(0.1, mask=[{"W": 1}]), "mask"),
])
def test_wrong_kind_of_argument_raises_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_message_names_argument_expected_and_received():
    with pytest.raises(ValueError) as error:
        fgd.adam(0.1, b1=1.5)
    assert str(error.value) == "adam: b1 must be in [0, 1), got 1.5"
