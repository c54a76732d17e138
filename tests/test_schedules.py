"""Schedules against their closed forms at hand-picked steps, and optax."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd import schedules

COS_PI_4 = math.cos(math.pi / 4)

# (schedule, {step: value computed by hand from the closed form})
CLOSED_FORMS = {
    "constant": (schedules.constant(0.3), {0: 0.3, 7: 0.3, 10_000: 0.3}),
    "piecewise": (schedules.piecewise_constant(1.0, {3: 0.5, 6: 0.1}),
                  {0: 1.0, 2: 1.0, 3: 0.5, 5: 0.5, 6: 0.05, 100: 0.05}),
    "exponential": (schedules.exponential_decay(1.0, 10, 0.5),
                    {0: 1.0, 5: math.sqrt(0.5), 10: 0.5, 20: 0.25}),
    "exponential_staircase": (schedules.exponential_decay(1.0, 10, 0.5, staircase=True),
                              {9: 1.0, 10: 0.5, 15: 0.5, 20: 0.25}),
    "exponential_begin_end": (schedules.exponential_decay(1.0, 10, 0.5, transition_begin=5,
                                                          end_value=0.3),
                              {3: 1.0, 15: 0.5, 35: 0.3}),
    "inverse_time": (schedules.inverse_time(1.0, 0.5, decay_steps=10),
                     {0: 1.0, 10: 1 / 1.5, 20: 0.5, 15: 1 / 1.75}),
    "inverse_time_staircase": (schedules.inverse_time(1.0, 0.5, 10, staircase=True),
                               {9: 1.0, 15: 1 / 1.5}),
    "cosine": (schedules.cosine_decay(1.0, 100),
               {0: 1.0, 25: 0.5 * (1 + COS_PI_4), 50: 0.5, 100: 0.0, 200: 0.0}),
    "cosine_alpha": (schedules.cosine_decay(2.0, 100, alpha=0.1),
                     {0: 2.0, 50: 2.0 * (0.9 * 0.5 + 0.1), 100: 0.2}),
    "warmup_cosine": (schedules.warmup_cosine_decay(0.0, 1.0, 10, 110, end_value=0.1),
                      {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.55, 110: 0.1, 500: 0.1}),
    "no_warmup": (schedules.warmup_cosine_decay(0.0, 1.0, 0, 100),
                  {0: 1.0, 50: 0.5, 100: 0.0}),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_schedule_equals_closed_form(name):
    schedule, expected = CLOSED_FORMS[name]
    for step, value in expected.items():
        got = schedule(jnp.asarray(step, jnp.int32))
        assert got.shape == ()
        assert math.isclose(float(got), value, rel_tol=1e-12, abs_tol=1e-15), (step, float(got))


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_schedule_traces_once_for_all_steps(name):
    schedule, expected = CLOSED_FORMS[name]
    traces = []

    @jax.jit
    def traced(step):
        traces.append(step)
        return schedule(step)

    for step, value in expected.items():
        assert math.isclose(float(traced(jnp.asarray(step, jnp.int32))), value,
                            rel_tol=1e-12, abs_tol=1e-15)
    assert len(traces) == 1


OPTAX = {
    "piecewise": lambda o: o.piecewise_constant_schedule(1.0, {3: 0.5, 6: 0.1}),
    "exponential": lambda o: o.exponential_decay(1.0, 10, 0.5),
    "exponential_staircase": lambda o: o.exponential_decay(1.0, 10, 0.5, staircase=True),
    "exponential_begin_end": lambda o: o.exponential_decay(1.0, 10, 0.5, transition_begin=5,
                                                           end_value=0.3),
    "cosine": lambda o: o.cosine_decay_schedule(1.0, 100),
    "cosine_alpha": lambda o: o.cosine_decay_schedule(2.0, 100, alpha=0.1),
    "warmup_cosine": lambda o: o.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTAX))
def test_schedule_matches_optax(name):
    optax = pytest.importorskip("optax")
    ours, theirs = CLOSED_FORMS[name][0], OPTAX[name](optax)
    steps = jnp.arange(0, 150, dtype=jnp.int32)
    # optax evaluates in float32, whatever the x64 setting.
    np.testing.assert_allclose(jax.vmap(ours)(steps), jax.vmap(theirs)(steps), rtol=1e-6, atol=1e-7)


def test_schedule_is_accepted_as_a_learning_rate():
    opt = fgd.sgd(schedules.piecewise_constant(1.0, {2: 0.5}))
    x = jnp.zeros(1)
    state = opt.init(x)
    steps = []
    for _ in range(4):
        updates, state = opt.update(jnp.ones(1), state, x)
        steps.append(float(updates[0]))
    assert steps == [-1.0, -1.0, -0.5, -0.5]


@pytest.mark.parametrize("make, match", [
    (lambda: schedules.constant(-1.0), "value"),
    (lambda: schedules.piecewise_constant(1.0, {10: -0.5}), "scale"),
    (lambda: schedules.piecewise_constant(1.0, {-1: 0.5}), "boundary"),
    (lambda: schedules.exponential_decay(1.0, 0, 0.5), "transition_steps"),
    (lambda: schedules.exponential_decay(1.0, 10, 0.0), "decay_rate"),
    (lambda: schedules.exponential_decay(float("nan"), 10, 0.5), "init_value"),
    (lambda: schedules.inverse_time(1.0, -0.5), "decay_rate"),
    (lambda: schedules.inverse_time(1.0, 0.5, decay_steps=0), "decay_steps"),
    (lambda: schedules.cosine_decay(1.0, 0), "decay_steps"),
    (lambda: schedules.warmup_cosine_decay(0.0, 1.0, 10, 10), "decay_steps"),
    (lambda: schedules.warmup_cosine_decay(0.0, -1.0, 10, 100), "peak_value"),
])
def test_bad_schedule_argument_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_kind_of_schedule_argument_raises_type_error():
    with pytest.raises(TypeError, match="warmup_steps"):
        schedules.warmup_cosine_decay(0.0, 1.0, 2.5, 100)
