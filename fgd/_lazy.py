"""`fgd.<package>.<module>` before the module is imported (``import fgd`` is lazy)."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def submodule_getattr(package: str) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports its submodules on first use."""
    def __getattr__(name: str) -> Any:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__
