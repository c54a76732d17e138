"""The command line answers at once: `import fgd`, `fgd list` and `--help`
load no jax; `run NAME --help` describes every option; the persistent
compilation cache is the command line's alone."""
import dataclasses
import os
import subprocess
import sys

import pytest

import fgd
from fgd import cli

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def run_python(code, env=ENV):
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env=env).stdout


def test_import_fgd_list_and_help_load_no_jax():
    out = run_python(
        "import sys, io, contextlib, fgd, fgd.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as f:\n"
        "    assert fgd.cli.main(['list']) == 0 and fgd.cli.main(['--help']) == 0\n"
        "print(sorted(m for m in ('jax', 'matplotlib', 'numpy') if m in sys.modules))\n"
        "print(len(f.getvalue().splitlines()))")
    loaded, lines = out.split("\n")[:2]
    assert loaded == "[]"
    assert int(lines) > len(cli.experiment_names())


def test_lazy_names_resolve_and_are_listed():
    for name in fgd.__all__:
        assert getattr(fgd, name) is not None
        assert name in dir(fgd)
    from fgd import fit, schedules, sgd  # noqa: F401
    assert fgd.fit.__module__ == "fgd.training.fit" and fgd.schedules.__name__ == "fgd.optim.schedules"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = fgd.nope


def test_submodules_are_reachable_from_a_bare_import():
    out = run_python("import fgd; print(fgd.training.chunk.__name__, fgd.nn.mlp.__name__, "
                     "fgd.optim.tree.__name__, fgd.backprop.__module__)")
    assert out.split() == ["fgd.training.chunk", "fgd.nn.mlp", "fgd.optim.tree", "fgd.backprop"]


def test_list_reads_the_docstring_summary_of_each_experiment():
    for name in cli.experiment_names():
        summary = cli.summary(name)
        assert summary and "\n" not in summary
        assert summary == (cli.load_experiment(name).__doc__ or "").strip().splitlines()[0]


@pytest.mark.parametrize("name", cli.experiment_names())
def test_run_help_describes_every_option_with_its_default(name, capsys):
    config = cli.load_experiment(name).Config
    with pytest.raises(SystemExit):
        cli.parse_config(config, ["--help"], prog=f"fgd run {name}")
    text = " ".join(capsys.readouterr().out.split())
    docs = cli.option_docs(config)
    for f in dataclasses.fields(config):
        assert docs[f.name], f"{name}: option {f.name} has no description"
        assert "--" + f.name.replace("_", "-") in text
    assert text.count("(default:") == len(dataclasses.fields(config))


def _count_cases():
    for name in cli.experiment_names():
        for f in dataclasses.fields(cli.load_experiment(name).Config):
            if f.name in cli.COUNT_OPTIONS:
                yield name, f.name, "0,3" if isinstance(f.default, tuple) else "0"


@pytest.mark.parametrize("name, field, value", list(_count_cases()))
def test_a_count_below_one_exits_2_before_the_run(name, field, value, monkeypatch, capsys):
    module = cli.load_experiment(name)
    monkeypatch.setattr(module, "main", lambda config: pytest.fail("the experiment ran"))
    monkeypatch.setattr(cli, "load_experiment", lambda n: module)
    option = "--" + field.replace("_", "-")
    assert cli.main(["--no-compile-cache", "run", name, option, value]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: fgd run {name}: {option} must be >= 1"
                     f"{' each' if ',' in value else ''}; got {value}"]


def test_every_count_option_is_an_experiments_option_and_the_defaults_pass():
    fields = set()
    for name in cli.experiment_names():
        config = cli.load_experiment(name).Config
        cli.parse_config(config, [])                 # the defaults are all >= 1
        fields |= {f.name for f in dataclasses.fields(config)}
    assert cli.COUNT_OPTIONS <= fields, cli.COUNT_OPTIONS - fields


def test_compile_cache_is_per_user_and_can_be_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.compile_cache_dir() == tmp_path / "fgd" / "jax"
    monkeypatch.setenv("FGD_COMPILE_CACHE", "0")
    assert cli.enable_compile_cache() is None
    # (without the test session's own cache, which conftest hands its children)
    env = {k: v for k, v in ENV.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    out = run_python("import fgd, jax; print(jax.config.jax_compilation_cache_dir)", env)
    assert out.strip() in ("None", "")          # importing fgd changes no jax setting
