"""The README's code blocks run as written (the ones that need no other process)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_block(after_heading: str) -> str:
    text = README.read_text()
    section = text[text.index(after_heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_backprop_check_in_three_lines_runs_and_passes(capsys):
    namespace: dict = {}
    exec(python_block("## Check a backprop of your own"), namespace)
    report = namespace["report"]
    assert report.ok and report.max_rel_error < 1e-6
    assert "hand~autodiff" in capsys.readouterr().out


def test_optimizer_chain_and_step_run():
    import jax

    import fgd

    namespace: dict = {"jax": jax, "fgd": fgd}
    exec(python_block("## Check a backprop of your own"), namespace)   # gives X, Y (3, 20), (2, 20)
    X, Y = namespace["X"], namespace["Y"]
    net = fgd.MLP((3, 8, 2), hidden="sigmoid", output="identity")
    before = float(fgd.make_loss(net, "sse")(net.init(jax.random.key(0), scheme="small"), X, Y))
    exec(python_block("## Optimizers and the jitted step"), namespace)
    # the step returns the loss at the params it started from
    assert float(namespace["loss_value"]) == pytest.approx(before, rel=1e-6)
    assert float(namespace["loss"](namespace["params"], X, Y)) < before


def test_diagnostics_block_runs():
    namespace: dict = {}
    exec(python_block("## Diagnostics and curvature"), namespace)
    result = namespace["result"]
    assert result.history["layer_grad_norm"].shape == (200, 3)
    assert namespace["eigs"].shape == (3,) and namespace["eigs"][0] >= namespace["eigs"][1]
    assert namespace["found"].lrs[0] < namespace["found"].suggestion < namespace["found"].lrs[-1]
