"""`python -m fgd check`: every model of the zoo passes, with x64 off as on the
command line (the check itself runs in float64)."""
import pytest

from fgd import zoo


@pytest.mark.slow   # the whole zoo: 16 models compiled, 20-30 s on a 2-core CPU
def test_every_zoo_model_passes_and_gets_a_row(capsys):
    assert zoo.run_check() is True
    out = capsys.readouterr().out.splitlines()
    names = [case.name for case in zoo.cases()]
    rows = [line for line in out if line[:34].strip() in names]
    assert len(rows) == len(names) == 16
    assert all(line.endswith("  ok") for line in rows), "\n".join(out)
    assert out[-1] == "all gradients agree"
