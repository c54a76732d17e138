"""The command line: `python -m fgd list | run NAME [--options] | check`.

    python -m fgd list                  the experiments, one line each
    python -m fgd run traffic --lr 0.05 run one; options come from its Config
    python -m fgd check                 the gradient check over a zoo of models
    python -m fgd figures [NAME ...]    rerun experiments, refresh experiments/figures/

The console script `fgd` is the same program. A bad name or option value
prints one line on stderr and exits with status 2.

Experiments live in `experiments/<name>.py` at the top of the repository and
are installed as the package `fgd.experiments` (editable or not); the
environment variable FGD_EXPERIMENTS names another folder of them. Each holds
a frozen dataclass `Config` and `main(config) -> dict`; `parse_config` turns
the Config's fields into options (`batch_size` -> `--batch-size`).
"""
from __future__ import annotations

import argparse
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


def _summary(module: types.ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


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
    """
    parser = _Parser(prog=prog, description=(config_cls.__doc__ or "").strip())
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind, flag = _field_parser(hints[f.name])
        opt = "--" + f.name.replace("_", "-")
        if flag:
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(opt, dest=f.name, type=kind, default=f.default, metavar=f.name.upper())
    return config_cls(**vars(parser.parse_args(argv)))


def cmd_list() -> int:
    names = experiment_names()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {_summary(load_experiment(name))}")
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: fgd {list | run NAME [--options] | check | figures [NAME ...]}"
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
            return cmd_run(rest[0], rest[1:])
        if command == "check":
            return cmd_check(rest)
        if command == "figures":
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
