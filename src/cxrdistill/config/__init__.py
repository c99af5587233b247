"""Experiment configuration: the settings' schema, a run's identity, and where presets come from.

One module each (:mod:`~cxrdistill.config.schema`, :mod:`~cxrdistill.config.identity`,
:mod:`~cxrdistill.config.presets`); the names the rest of the package uses are re-exported here.
"""

from cxrdistill.config.identity import (
    NOT_STORED,
    SETTINGS_FREE_TO_CHANGE,
    config_differences,
    config_digest,
    flat_settings,
)
from cxrdistill.config.presets import find_config, load_config, load_named, preset, preset_names
from cxrdistill.config.schema import (
    ConfigError,
    DataConfig,
    DistillConfig,
    EvaluationConfig,
    ExperimentConfig,
    ModelConfig,
    OverrideError,
    TrainConfig,
    config_from_dict,
    load_dataclass,
    save_config,
)

__all__ = [
    "NOT_STORED", "SETTINGS_FREE_TO_CHANGE", "ConfigError", "DataConfig", "DistillConfig", "EvaluationConfig",
    "ExperimentConfig", "ModelConfig", "OverrideError", "TrainConfig", "config_differences", "config_digest",
    "config_from_dict", "find_config", "flat_settings", "load_config", "load_dataclass",
    "load_named", "preset", "preset_names", "save_config",
]
