"""A run's identity: which settings define a run (hashed into its digest) and which are free to change.

A finished or interrupted run is reused or continued only when its defining settings match the current
config; the settings listed in :data:`SETTINGS_FREE_TO_CHANGE` (where it lives, resources, how it is scored)
may differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cxrdistill.config.schema import ExperimentConfig, plain_data
from cxrdistill.files import text_digest

SETTINGS_FREE_TO_CHANGE: frozenset[str] = frozenset({
    "name", "output_dir",  # where the run lives, not how it trains
    "train.epochs",  # raised to extend a run (the schedule is closed-form in the epoch)
    "train.threads", "data.num_workers", "train.device", "train.log_every",  # resources and logging
    "train.checkpoint_every",  # how often the resume state is written; training is the same
    "train.keep",  # which of best / last is handed on; training is the same
    "data.external",  # extra evaluation sets; training does not see them
    "evaluation.threshold_policy", "evaluation.min_sensitivity", "evaluation.fixed_threshold",
    "evaluation.n_bootstrap",  # how the trained model is scored, not how it is trained
})
"""Settings a run may be continued or reused with after changing them; every other one makes it another run."""

NOT_STORED = "(not stored)"
"""Stands for a setting a run's stored config lacks (the run predates it) in :func:`config_differences`."""


def flat_settings(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 0.0002, ...}``: every setting by its dotted key, tuples as lists (as YAML stores them)."""
    flat: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            flat.update(flat_settings(value, f"{prefix}{item.name}."))
        else:
            flat[f"{prefix}{item.name}"] = plain_data(value)
    return flat


def config_digest(config: ExperimentConfig) -> str:
    """A short hash of the settings that define a run (all but :data:`SETTINGS_FREE_TO_CHANGE`)."""
    return text_digest({k: v for k, v in flat_settings(config).items() if k not in SETTINGS_FREE_TO_CHANGE})


def config_differences(stored: dict[str, Any], current: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (stored value, current value)}`` for each setting that defines a run and differs.

    ``stored`` is a run's saved config (a plain dict, possibly from an older version). A key it lacks
    counts as equal when the current value is the default: the run was made before the key existed,
    with the behaviour that default keeps.
    """
    defaults = flat_settings(ExperimentConfig())
    differences = {}
    for key, value in flat_settings(current).items():
        if key in SETTINGS_FREE_TO_CHANGE:
            continue
        old = _lookup(stored, key)
        if old is NOT_STORED:
            if value != defaults.get(key):
                differences[key] = (NOT_STORED, value)
        elif plain_data(old) != value:
            differences[key] = (plain_data(old), value)
    return differences


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return NOT_STORED
        node = node[part]
    return node
