"""Public names of a package, imported from their modules on first use (PEP 562 module ``__getattr__``).

Keeps ``import cxrdistill`` and ``import cxrdistill.deployment`` cheap: a notebook's
``cxrdistill.create_model`` loads torch then, and ``cxrdistill.deployment.create_app`` needs the ``serve``
extra only when it is used. Each package states its names in a literal ``__all__`` and where each lives.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(namespace: dict[str, Any], modules: dict[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the package whose ``globals()`` is ``namespace``.

    ``modules`` maps a module (absolute, or relative to the package, e.g. ``"audit"``) to the names it gives.
    The names must be the package's ``__all__``, exactly: a name listed but not provided is an import error.
    """
    package = namespace["__name__"]
    home = {name: module if module.startswith("cxrdistill") else f"{package}.{module}"
            for module, names in modules.items() for name in names}
    if sorted(home) != sorted(namespace.get("__all__", ())):
        raise ImportError(f"{package}: __all__ and the lazily exported names differ: "
                          f"{sorted(set(home) ^ set(namespace.get('__all__', ())))}")

    def __getattr__(name: str) -> Any:  # noqa: N807  (the module hook's required name)
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home[name]), name)
        namespace[name] = value  # later look-ups skip this hook
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*namespace, *home})

    return __getattr__, __dir__
