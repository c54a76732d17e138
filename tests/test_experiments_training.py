"""The training experiments (optimizers, gradients, regularization,
local_minima, digits): each claim asserted on a real, small run.

Every experiment's `main` runs once per module (fixtures below) at a small
setting; the claims are checked on the numbers it returns and the figures it
writes. Thresholds are stated where they are set: they are loose on purpose
(convergence claims), but each is a measured effect of orders of magnitude or
a clear ordering, not "the loss went down".
"""

import jax.numpy as jnp
import numpy as np
import pytest

from fgd import cli

MIN_PNG_BYTES = 1000


def experiment(name):
    return cli.load_experiment(name)


def run(name, tmp_path_factory, **overrides):
    module = experiment(name)
    out = tmp_path_factory.mktemp(name)
    numbers = module.main(module.Config(out=str(out), **overrides))
    return numbers, out / name


@pytest.fixture(scope="module")
def gradients(tmp_path_factory):
    return run("gradients", tmp_path_factory, epochs=40, deep_epochs=2)


@pytest.fixture(scope="module")
def optimizers(tmp_path_factory):
    return run("optimizers", tmp_path_factory, steps=2000, grid=5, epochs=1)


@pytest.fixture(scope="module")
def regularization(tmp_path_factory):
    return run("regularization", tmp_path_factory, epochs=1500, strengths=(0.0, 0.03, 3.0))


@pytest.fixture(scope="module")
def local_minima(tmp_path_factory):
    return run("local_minima", tmp_path_factory, restarts=32, epochs=1000, lrs=(1.0,), lr=1.0,
               widths=(2, 4), critical_restarts=8, critical_epochs=300)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    # the experiment's default setting: the 97% claim is about it
    return run("digits", tmp_path_factory)


FIGURES = {
    "gradients": ["exploding_loss.png", "exploding_grad_norm.png", "vanishing_init.png",
                  "vanishing_sigmoid.png", "vanishing_relu.png", "vanishing_loss.png",
                  "vanishing_dead_fraction.png", "vanishing_saturated_fraction.png"],
    "optimizers": ["saddle.png", "saddle_loss.png", "rosenbrock.png", "wells.png", "digits_loss.png"],
    "regularization": ["errors.png", "fits.png", "weights.png"],
    "local_minima": ["share_global.png", "final_losses.png", "curves.png", "critical_points.png"],
    "digits": ["loss.png", "misclassified.png"],
}


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figures_results_and_history_are_written(name, request):
    numbers, directory = request.getfixturevalue(name)
    for figure in FIGURES[name]:
        path = directory / figure
        assert path.is_file() and path.stat().st_size > MIN_PNG_BYTES, path
    assert (directory / "results.json").is_file()
    assert isinstance(numbers, dict) and numbers


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_docstring_gives_the_run_command(name):
    module = experiment(name)
    first = module.__doc__.strip().splitlines()[0]
    assert first and len(first) < 130
    assert f"python -m fgd run {name}" in module.__doc__
    config = module.Config()
    for field in ("lr", "epochs", "batch_size", "seed", "out", "full"):
        assert hasattr(config, field), field


# --- gradients --------------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_clipping_keeps_finite_a_run_that_diverges_without_it(gradients):
    numbers, _ = gradients
    assert numbers["explode_sgd_lr_0.1_stop"] == "nonfinite"
    assert numbers["explode_sgd_lr_0.1_clip_1_stop"] == "epochs"
    final = numbers["explode_sgd_lr_0.1_clip_1_final_loss"]
    assert np.isfinite(final) and final < 0.5  # trains: from about 3.3 at init (0.22 in float32 here)
    # the unclipped run's gradient norm grew by orders of magnitude before the NaN
    assert numbers["explode_sgd_lr_0.1_max_grad_norm"] > 100 * numbers["explode_sgd_lr_0.1_clip_1_max_grad_norm"] \
        or numbers["explode_sgd_lr_0.1_max_grad_norm"] > 1e3


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_deep_sigmoid_first_layer_gradient_is_orders_of_magnitude_below_the_last(gradients):
    numbers, _ = gradients
    # 10 sigmoid layers, Xavier init: measured about 3e-6; claim: at least 3 orders of magnitude
    assert numbers["vanish_sigmoid_init_first_over_last"] < 1e-3
    # relu + He: the norms stay within a factor of 10 of each other
    assert 0.1 < numbers["vanish_relu_init_first_over_last"] < 10
    norms = np.asarray(numbers["vanish_relu_init_layer_norms"])
    assert norms.max() / norms.min() < 10
    # diagnose names it from fit's on-device per-layer norms
    assert any(f.startswith("vanishing gradients") for f in numbers["vanish_sigmoid_diagnosis"])
    assert len(numbers["vanish_relu_dead_fraction_end"]) == 9      # one column per hidden layer


# --- optimizers -------------------------------------------------------------------
def test_momentum_and_adam_beat_plain_gd_on_rosenbrock():
    """Steps until first within 1e-3 of (1, 1) from (-1.5, 2), each at a rate of
    the experiment's grid: gd 1e-3, momentum 1e-3, adam 0.03. Measured in
    float64: gd 17,695, momentum 1,677, adam 1,938."""
    module = experiment("optimizers")
    start = jnp.asarray([-1.5, 2.0])
    steps = {}
    for name, lr in (("gd", 1e-3), ("momentum", 1e-3), ("adam", 0.03)):
        P = module.paths(module.rosenbrock, module.OPTIMIZERS[name](lr), start, jnp.asarray([lr]), 20_000)
        dist = np.linalg.norm(np.nan_to_num(P, nan=np.inf) - 1.0, axis=-1)
        steps[name] = int(module.first_true(dist < 1e-3)[0])
    assert steps["momentum"] > 0 and steps["adam"] > 0
    assert steps["gd"] == -1 or steps["gd"] > 5 * steps["momentum"]
    assert steps["gd"] == -1 or steps["gd"] > 2 * steps["adam"]


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_momentum_leaves_the_saddle_faster_and_rolls_past_the_shallow_well(optimizers):
    numbers, _ = optimizers
    gd, momentum = numbers["saddle_gd_steps_to_leave"], numbers["saddle_momentum_steps_to_leave"]
    assert momentum > 0 and (gd == -1 or gd > 2 * momentum)
    assert numbers["wells_gd_well_at_lr"] == 0        # the shallow well on the way
    assert numbers["wells_momentum_well_at_lr"] == 1  # the deepest well


# --- regularization -----------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_l2_closes_the_train_test_gap_and_l1_makes_weights_sparse(regularization):
    numbers, _ = regularization
    train, test = np.asarray(numbers["l2_train"]), np.asarray(numbers["l2_test"])
    gap = test - train
    assert gap[1:].min() < 0.7 * gap[0]          # some strength closes the gap
    assert test[1] < test[0] and test[1] < test[2]   # U shape: 0 overfits, 3 underfits
    assert numbers["l1_zero"][1] > 0.5 > numbers["l2_zero"][0]


# --- local minima ---------------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_random_restarts_reach_more_than_one_minimum(local_minima):
    numbers, _ = local_minima
    assert {"global", "ln2/2"} <= set(numbers["classes_reached"])
    assert 0 < numbers["full_batch_lr1_global"] < 1


# --- digits --------------------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_critical_points_are_classified_by_their_hessian_spectrum(local_minima):
    numbers, _ = local_minima
    mod = experiment("local_minima")
    assert mod.classify_spectrum(np.array([1.0, 2.0, 3.0])) == ("minimum", 0)
    assert mod.classify_spectrum(np.array([-1.0, -0.5, 3.0])) == ("saddle", 2)
    assert mod.classify_spectrum(np.array([0.0, 1e-9, 3.0])) == ("flat", 0)
    for w in (2, 4):
        assert numbers[f"width{w}_lanczos_top_error"] < 1e-6      # Lanczos = eigvalsh, float64
        assert sum(numbers[f"width{w}_spectrum"].values()) == numbers[f"width{w}_critical"]


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_digits_reaches_97_percent_test_accuracy(digits):
    numbers, _ = digits
    assert numbers["test_accuracy"] >= 0.97
    assert np.asarray(numbers["confusion"]).sum() == numbers["n_test"]
