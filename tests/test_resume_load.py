"""fgd.resume.load: a fit checkpoint opened for inference, with the safety of resuming."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd.checkpoint import CheckpointError, CheckpointWarning

RNG = np.random.default_rng(1)


def problem():
    net = fgd.MLP((4, 8, 3), hidden="tanh", output="softmax")
    params = net.init(jax.random.key(0), "xavier", dtype=jnp.float64)
    X = RNG.normal(size=(4, 50))
    Y = np.eye(3)[(X[0] + X[1] > 0).astype(int) + (X[2] > 1)].T
    return net, fgd.make_loss(net, "cross_entropy"), params, X, Y


def same_tree(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("batch_size, nonfinite", [(None, "stop"), (10, "skip")])
def test_a_fit_checkpoint_opened_for_inference_predicts_like_the_trained_params(tmp_path, batch_size,
                                                                                nonfinite):
    net, loss, params, X, Y = problem()
    result = fgd.fit(loss, params, fgd.adam(0.05), X, Y, epochs=12, batch_size=batch_size,
                     checkpoint_dir=tmp_path, checkpoint_every=5, nonfinite=nonfinite,
                     validation=(X[:, :10], Y[:, :10]), history=("loss", "val_accuracy"))
    state = fgd.resume.load(tmp_path)
    assert state.epoch == result.epochs == 12 and state.path == tmp_path / "ckpt-12.npz"
    np.testing.assert_array_equal(net.predict(state.params, X), net.predict(result.params, X))
    same_tree(state.params, result.params)
    same_tree(state.opt_state, result.opt_state)       # fgd's own AdamState, unwrapped
    assert type(state.opt_state) is type(result.opt_state)
    assert state.history.keys() == result.history.keys()
    for name in result.history:
        np.testing.assert_array_equal(state.history[name], result.history[name])
    assert fgd.evaluate(loss, state.params, X, Y) == fgd.evaluate(loss, result.params, X, Y)


def test_load_skips_a_damaged_newest_file_and_leaves_it_alone(tmp_path):
    net, loss, params, X, Y = problem()
    fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=10, checkpoint_dir=tmp_path, checkpoint_every=5)
    newest = tmp_path / "ckpt-10.npz"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match="ckpt-10.npz"):
        state = fgd.resume.load(tmp_path)
    assert state.epoch == 5 and newest.exists()
    five = fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=5)
    same_tree(state.params, five.params)


def test_load_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        fgd.resume.load(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"no fit checkpoint \(ckpt-<epoch>.npz\)"):
        fgd.resume.load(tmp_path)
    with pytest.raises(TypeError, match="checkpoint_dir must be a path"):
        fgd.resume.load(3)
    fgd.checkpoint.save(tmp_path / "ckpt-3.npz", {"W": np.ones(2)}, {"epoch": 3})
    (tmp_path / "ckpt-4.npz").write_bytes(b"PK\x03\x04 not a zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(CheckpointError, match="reads cleanly.*not a readable npz.*not a fit checkpoint"):
            fgd.resume.load(tmp_path)


def test_layout_round_trip_keeps_empty_nodes_none_and_namedtuple_classes():
    from fgd import layout
    state = fgd.sgd(0.1).init([{"W": jnp.ones((2, 2)), "b": jnp.zeros((2, 1))}])
    tree = {"a": [state, None, ()], "b": (1.0, {"z": jnp.ones(3), "y": jnp.zeros(1)})}
    leaves, treedef = jax.tree.flatten(tree)
    back = layout.rebuild(layout.describe(tree), leaves)
    assert jax.tree.structure(back) == treedef and type(back["a"][0]) is type(state)
    with pytest.raises(ValueError, match="fewer leaf positions"):
        layout.rebuild(layout.describe(tree), leaves + [1])
    with pytest.raises(ValueError, match="unknown node kind"):
        layout.rebuild({"node": "eval", "children": []}, [])
