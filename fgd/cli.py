"""The command line: `python -m fgd list | run NAME [--options] | check`.

    python -m fgd list                  the experiments, one line each
    python -m fgd run traffic --lr 0.05 run one; options come from its Config
    python -m fgd check                 the gradient check over a zoo of models
    python -m fgd figures [NAME ...]    rerun experiments, refresh experiments/figures/
    python -m fgd --no-compile-cache run traffic   without the persistent compile cache

The console script `fgd` is the same program. A bad name or option value
prints one line on stderr and exits with status 2. `run` and `check` keep
compiled programs in JAX's persistent compilation cache, in
$XDG_CACHE_HOME/fgd/jax (else ~/.cache/fgd/jax), so a second run in a new
process does not compile again; --no-compile-cache or FGD_COMPILE_CACHE=0
turns that off. Only the command line does this: `import fgd` never changes
jax's configuration.

`list` and `--help` answer without importing jax: `list` reads each
experiment's first docstring line from its file (`ast`), and `import fgd` is
lazy. `run NAME --help` describes every option with its default, from the
Config docstring's "Attributes:" section, else the field's trailing comment,
else the shared descriptions of common options (`COMMON_OPTIONS`).

Experiments live in `experiments/<name>.py` at the top of the repository and
are installed as the package `fgd.experiments` (editable or not); the
environment variable FGD_EXPERIMENTS names another folder of them. Each holds
a frozen dataclass `Config` and `main(config) -> dict`; `parse_config` turns
the Config's fields into options (`batch_size` -> `--batch-size`).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Optional, Sequence


def experiments_dir() -> Path:
    """The folder of the experiments: $FGD_EXPERIMENTS, else the installed
    `fgd.experiments` package, else `experiments/` beside the package."""
    override = os.environ.get("FGD_EXPERIMENTS")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("fgd.experiments")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "experiments"


EXPERIMENTS_DIR = experiments_dir()


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def experiment_names() -> list[str]:
    if not EXPERIMENTS_DIR.is_dir():
        return []
    return sorted(
        p.stem for p in EXPERIMENTS_DIR.glob("*.py")
        if not p.stem.startswith(("_", "benchmark"))  # benchmarks are scripts, not experiments
    )


def load_experiment(name: str) -> types.ModuleType:
    """Import experiments/<name>.py as a module."""
    names = experiment_names()
    if name not in names:
        if not names:
            raise UsageError(
                f"no experiments found in {EXPERIMENTS_DIR}: reinstall fgd "
                "(they ship as fgd.experiments) or set FGD_EXPERIMENTS to their folder"
            )
        raise UsageError(f"unknown experiment {name!r}; choose one of: {', '.join(names)}")
    path = EXPERIMENTS_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fgd.experiments.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def summary(name: str) -> str:
    """The first line of experiments/<name>.py's docstring, read with `ast`
    (nothing is imported)."""
    try:
        doc = ast.get_docstring(ast.parse((EXPERIMENTS_DIR / f"{name}.py").read_text()))
    except (OSError, SyntaxError, ValueError):
        return ""
    doc = (doc or "").strip()
    return doc.splitlines()[0] if doc else ""


#: One-line descriptions of options many experiments share, used where a
#: Config documents a field neither in "Attributes:" nor in a comment.
COMMON_OPTIONS = {
    "lr": "learning rate",
    "lrs": "learning rates to compare",
    "epochs": "epochs to train (at most)",
    "batch_size": "examples per update; none: full batch",
    "seed": "seed of the random keys (data split, initial params, batch order)",
    "seeds": "random starts",
    "out": "folder for the figures and records",
    "full": "the full-size run (slower) instead of the quick one",
    "quick": "a short run (fewer repeats and epochs)",
    "hidden": "hidden units",
    "m": "training examples",
    "repeats": "timed repetitions (the median is reported)",
    "test_fraction": "share of the examples held out for testing",
    "checkpoint_dir": "folder for checkpoints; none: no checkpoints",
    "checkpoint_every": "epochs (or a duration such as 30s) between checkpoints",
    "resume": "go on from the newest checkpoint",
    "threads": "CPU threads",
    "devices": "devices to use",
    "samples": "examples",
    "timeout": "seconds before a run is given up",
    "cost": "cost function (sse, mse, bce, cross_entropy)",
    "goal": "stop once the loss is <= goal",
    "depth": "layers",
    "width": "units per hidden layer",
    "sizes": "units per layer, inputs first",
}


#: Options that count something (epochs, units, starts, repeats): an int, or
#: each int of a tuple, must be >= 1, checked before the experiment runs.
COUNT_OPTIONS = frozenset({
    "epochs", "deep_epochs", "critical_epochs", "steps", "repeats", "seeds", "starts", "restarts",
    "critical_restarts", "m", "n_train", "hidden", "width", "widths", "depth", "sizes",
    "n_rates", "grid", "checkpoint_every",
})


def _check_counts(config, prog: str) -> None:
    for f in dataclasses.fields(config):
        if f.name not in COUNT_OPTIONS:
            continue
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in values):
            shown = ",".join(map(str, values))
            raise UsageError(f"{prog}: --{f.name.replace('_', '-')} must be >= 1"
                             f"{' each' if isinstance(value, tuple) else ''}; got {shown}")


def option_docs(config_cls: type) -> dict[str, str]:
    """field -> one-line description: the class docstring's "Attributes:"
    entries, else trailing comments on the fields, else `COMMON_OPTIONS`."""
    docs: dict[str, str] = {}
    lines = (config_cls.__doc__ or "").splitlines()
    inside, indent = False, None
    for line in lines:
        text = line.strip()
        if text == "Attributes:":
            inside, indent = True, None
            continue
        if not inside or not text:
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        if depth == indent and ":" in text:
            name, _, desc = text.partition(":")
            docs[name.split("(")[0].strip()] = desc.strip()
    try:
        import inspect

        source = inspect.getsource(config_cls)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                line = source.splitlines()[node.lineno - 1]
                if "#" in line and node.target.id not in docs:
                    docs[node.target.id] = line.split("#", 1)[1].strip()
    except (OSError, TypeError, SyntaxError):
        pass
    for f in dataclasses.fields(config_cls):
        docs.setdefault(f.name, COMMON_OPTIONS.get(f.name, ""))
    return docs


def _field_parser(tp: Any):
    """(argparse type, is_flag) for a Config field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        base, _ = _field_parser(inner[0])

        def optional(text, base=base):
            return None if text.lower() in ("none", "null", "") else base(text)

        optional.__name__ = getattr(base, "__name__", "value")
        return optional, False
    if tp is bool:
        return None, True
    if origin is tuple:
        (item, *_) = typing.get_args(tp) or (str,)
        base, _ = _field_parser(item)

        def many(text, base=base):
            return tuple(base(t) for t in text.split(",") if t)

        many.__name__ = f"comma-separated {getattr(base, '__name__', 'value')}s"
        return many, False
    return tp, False


def parse_config(config_cls: type, argv: Optional[Sequence[str]] = None, prog: str = "fgd run"):
    """A `config_cls` instance from command-line options named after its fields.

    `--name value` for each field (underscores become dashes), `--flag` and
    `--no-flag` for booleans, `none` for an Optional field, commas for tuples.
    A count (`COUNT_OPTIONS`: epochs, units, starts, ...) below 1 is refused
    with a `UsageError` naming the option.
    """
    description = (config_cls.__doc__ or "").strip().split("\n\n")[0]
    parser = _Parser(prog=prog, description=description)
    hints = typing.get_type_hints(config_cls)
    docs = option_docs(config_cls)
    for f in dataclasses.fields(config_cls):
        kind, flag = _field_parser(hints[f.name])
        opt = "--" + f.name.replace("_", "-")
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{docs[f.name]} (default: {shown})".strip().replace("%", "%%")
        if flag:
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=text)
        else:
            parser.add_argument(opt, dest=f.name, type=kind, default=default,
                                metavar=f.name.upper(), help=text)
    config = config_cls(**vars(parser.parse_args(argv)))
    _check_counts(config, prog)
    return config


def cmd_list() -> int:
    names = experiment_names()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {summary(name)}")
    return 0


def cmd_run(name: str, argv: Sequence[str]) -> int:
    module = load_experiment(name)
    config = parse_config(module.Config, argv, prog=f"fgd run {name}")
    module.main(config)
    return 0


def cmd_figures(argv: Sequence[str]) -> int:
    """Rerun experiments at their defaults and copy their figures into a folder.

    Each experiment NAME runs as `fgd run NAME` does (into a temporary
    folder); its `NAME/F.png` is copied to `<out>/NAME_F.png` when that file
    is already there (the folder's contents say which figures are published),
    or always with --all. No NAME: every experiment with a figure in `<out>`.
    """
    import shutil
    import tempfile

    parser = _Parser(prog="fgd figures", description=cmd_figures.__doc__.strip().split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--out", default=str(EXPERIMENTS_DIR / "figures"),
                        help="the folder of published figures (default: experiments/figures)")
    parser.add_argument("--all", action="store_true", help="copy every figure, not only those present")
    args = parser.parse_args(argv)
    out = Path(args.out)
    present = {p.name for p in out.glob("*.png")} if out.is_dir() else set()
    names = args.names or [n for n in experiment_names() if any(f.startswith(n + "_") for f in present)]
    for name in names:
        load_experiment(name)               # a bad name fails before any run
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        module = load_experiment(name)
        with tempfile.TemporaryDirectory() as tmp:
            print(f"== {name}", flush=True)
            module.main(parse_config(module.Config, ["--out", tmp], prog=f"fgd figures {name}"))
            for png in sorted((Path(tmp) / name).glob("*.png")):
                target = out / f"{name}_{png.name}"
                if args.all or target.name in present:
                    shutil.copyfile(png, target)
                    print(f"figure {target}")
    return 0


def cmd_check(argv: Sequence[str]) -> int:
    from fgd import zoo

    parser = _Parser(prog="fgd check", description="gradient check over a zoo of models")
    parser.add_argument("--verbose", action="store_true", help="print each model's per-leaf table")
    args = parser.parse_args(argv)
    return 0 if zoo.run_check(verbose=args.verbose) else 1


def compile_cache_dir() -> Path:
    """$XDG_CACHE_HOME/fgd/jax, else ~/.cache/fgd/jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fgd" / "jax"


def enable_compile_cache() -> Optional[Path]:
    """Turn on JAX's persistent compilation cache for this process (the
    command line only), caching every program however fast it compiled.
    Returns the folder, or None when FGD_COMPILE_CACHE=0 or this jax lacks
    the setting. Each key is set only where this jax has it."""
    if os.environ.get("FGD_COMPILE_CACHE", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    import jax

    folder = compile_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(folder))
    except (OSError, AttributeError, KeyError, ValueError):
        return None
    for name, value in (("jax_persistent_cache_min_compile_time_secs", 0.0),
                        ("jax_persistent_cache_min_entry_size_bytes", 0)):
        try:
            jax.config.update(name, value)
        except (AttributeError, KeyError, ValueError):     # an older jax: its defaults
            pass
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: fgd [--no-compile-cache] {list | run NAME [--options] | check | figures [NAME ...]}"
    cache = "--no-compile-cache" not in argv
    argv = [a for a in argv if a != "--no-compile-cache"]
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage)
            print(__doc__.strip().split("\n\n")[1])
            return 0
        command, rest = argv[0], argv[1:]
        if command == "list":
            return cmd_list()
        if command == "run":
            if not rest or rest[0].startswith("-"):
                raise UsageError("fgd run: give an experiment name; `fgd list` shows them")
            if cache and not {"-h", "--help"} & set(rest):
                enable_compile_cache()
            return cmd_run(rest[0], rest[1:])
        if command == "check":
            if cache:
                enable_compile_cache()
            return cmd_check(rest)
        if command == "figures":
            if cache:
                enable_compile_cache()
            return cmd_figures(rest)
        raise UsageError(f"unknown command {command!r}; {usage}")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fgd list | head`: the reader left; nothing is wrong
        sys.stdout = open(os.devnull, "w")
        return 0
    except (ValueError, TypeError) as e:
        # fgd's boundary checks reject an option value that argparse let through
        # (a negative --lr, say) before anything runs.
        if os.environ.get("FGD_TRACEBACK"):
            raise
        print(f"error: {e} (set FGD_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2
