"""Where a config comes from: a preset shipped inside the package (by name) or the user's own YAML file.

Presets live in the package (``cxrdistill/configs/``, package data), so an installed wheel has them as an
editable checkout does, and are addressed by name: ``cpu/teacher`` is ``configs/cpu/teacher.yaml``. The rule
for a value that could be either (``-c SPEC``): an existing file is that file, even where a preset has the
same name (the user's own copy is what runs); anything else is a preset name, with or without ``.yaml``.
Plans of ``cxrdistill reproduce`` are presets too, in their own folder (``reproduce/demo``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrdistill.config.schema import ConfigError, ExperimentConfig, load_dataclass

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PLAN_FOLDER = "reproduce"
"""The presets folder of reproduction plans (not experiment configs)."""

SUFFIX = ".yaml"


def preset_root() -> Traversable:
    """The package's ``configs/`` folder, wherever and however the package is installed."""
    return resources.files("cxrdistill") / "configs"


def preset_names(folder: str = "") -> list[str]:
    """Every preset under ``folder`` by name, sorted; the whole tree leaves out the plans' folder."""
    start = preset_root().joinpath(*folder.split("/")) if folder else preset_root()
    names: list[str] = []
    pending: list[tuple[Traversable, str]] = [(start, "")]
    while pending:
        node, prefix = pending.pop()
        for entry in node.iterdir():
            plans = not folder and not prefix and entry.name == PLAN_FOLDER
            if entry.is_dir() and not plans:
                pending.append((entry, f"{prefix}{entry.name}/"))
            elif entry.is_file() and entry.name.endswith(SUFFIX):
                names.append(prefix + entry.name.removesuffix(SUFFIX))
    return sorted(names)


def find_config(spec: str | Path, folder: str = "") -> tuple[Path | Traversable, str]:
    """The file ``spec`` stands for and the label its errors use: an existing file, else a preset by name.

    ``folder`` is where names are looked up (``reproduce`` for plans). An unknown name fails with the
    names that exist, and suggests the one an old ``configs/...`` path points at.
    """
    if Path(spec).is_file():
        return Path(spec), str(spec)
    name = str(spec).removesuffix(SUFFIX).strip("/")
    known = preset_names(folder)
    if name in known:
        full = f"{folder}/{name}" if folder else name
        return preset_file(full), f"preset {full}"
    meant = [k for k in known if name.endswith(f"/{k}")]
    hint = f" (did you mean the preset {max(meant, key=len)!r}?)" if meant else ""
    kind = f"{folder} preset" if folder else "preset"
    raise ConfigError(f"{str(spec)!r} is neither a file nor a {kind}{hint}; presets: {', '.join(known) or 'none'}")


def load_config(spec: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """An experiment from a preset name or a YAML file (defaults when ``spec`` is None), with dotted overrides."""
    return load_named(ExperimentConfig, spec, overrides)


def load_named(cls: type, spec: str | Path | None, overrides: list[str] | None = None, folder: str = "") -> Any:
    """Any settings dataclass from a preset name (looked up in ``folder``) or a file, as :func:`load_config`."""
    if spec is None:
        return load_dataclass(cls, None, overrides)
    source, label = find_config(spec, folder)
    return load_dataclass(cls, source, overrides, label)


def preset_file(name: str) -> Traversable:
    """The packaged file of preset ``name`` (``cpu/teacher``, ``reproduce/demo``), whether or not it exists."""
    return preset_root().joinpath(*f"{name}{SUFFIX}".split("/"))


def preset(name: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """A preset such as ``cpu/teacher`` by name (never a file of the working folder)."""
    known = preset_names()
    if name not in known:
        raise ConfigError(f"no preset {name!r}; known: {', '.join(known) or 'none'}")
    return load_dataclass(ExperimentConfig, preset_file(name), overrides, f"preset {name}")
