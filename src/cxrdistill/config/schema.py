"""The settings' schema: plain dataclasses loaded from YAML, validated on load.

A config file is plain data (no YAML tags, no code). Unknown keys and wrong types fail loudly with
the dotted key and the file they came from, because a typo that silently falls back to a default
ruins an experiment without anyone noticing. Command-line overrides use the same dotted keys
(``train.epochs=3``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from cxrdistill.errors import CxrDistillError
from cxrdistill.files import atomic_write_text

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


class ConfigError(CxrDistillError, ValueError):
    """A config file or override that cannot be used as written."""


class OverrideError(ConfigError):
    """A ``key=value`` override that cannot be applied: the file it was applied to is not to blame."""


MAX_BORDER_CROP = 0.25
"""``data.border_crop`` stays below a quarter of each side: beyond it the lungs themselves are cut."""


@dataclass
class DataConfig:
    root: str | None = None
    """Kermany-layout folder. Required, unless ``synthetic`` asks for made-up images instead."""
    synthetic: bool = False
    """Train on the project's SYNTHETIC set (written to ``synthetic_dir`` on first use; not X-rays): for trying
    the tools offline. A run with neither ``root`` nor this is refused rather than trained on made-up data."""
    synthetic_dir: str = "outputs/synthetic"
    split_file: str | None = None
    """Where the patient-wise split is stored; default: inside ``cache_dir``, keyed by root and seed."""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    """Only used when the data has no ``test/`` folder: that share of patients becomes the test split."""
    split_seed: int = 0
    image_size: int | None = None
    """Input size; ``None`` takes the model's own (299 for InceptionV3, 224 for the others)."""
    cache_dir: str = ".cache/cxrdistill"
    use_cache: bool = True
    augment: bool = True
    max_rotation: float = 10.0
    max_translate: float = 0.06
    scale_range: tuple[float, float] = (0.9, 1.1)
    horizontal_flip: bool = False
    crop_scale: tuple[float, float] | None = None
    """Random resized crop (area range, e.g. [0.7, 1.0]) in place of the affine scale; ``None``: affine only."""
    brightness: float = 0.0
    contrast: float = 0.0
    gamma_range: tuple[float, float] = (1.0, 1.0)
    blur_probability: float = 0.0
    noise_std: float = 0.0
    """Intensity augmentation (brightness/contrast jitter, gamma, blur, noise): imitates other scanners."""
    intensity_normalization: Literal["none", "equalize"] = "none"
    """Applied to every image at read time (training, evaluation, prediction): part of the model."""
    border_crop: float = 0.0
    """Share of the height cut off the top and bottom and of the width off each side before the resize, for
    every image (training, evaluation, prediction): part of the model. Removes edge cues such as side markers
    and framing (see the shortcut audit); below 0.25."""
    batch_size: int = 32
    """Per process: under ``torchrun`` each of N processes takes this many images a step (global batch N x it)."""
    num_workers: int = -1
    """-1 sizes the loader to the machine (cores - 1, at most 8)."""
    max_per_class: int | None = None
    """Cap on training images per class (a reduced preset for CPU runs); a seeded random sample."""
    external: list[str] = field(default_factory=list)
    """External validation sets (a bare ``NORMAL/`` + ``PNEUMONIA/`` folder, or a root whose ``test/`` is used):
    every run is evaluated on them after training. Never trained on, and never used to choose anything."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.border_crop < MAX_BORDER_CROP:
            raise ConfigError(f"data.border_crop: {self.border_crop} must be in [0, {MAX_BORDER_CROP})")


@dataclass
class ModelConfig:
    name: str = "alexnet"
    init: str = "scratch"
    """``scratch``, ``imagenet`` (torchvision weights from the hub cache) or a path to a weights file."""
    transfer: Literal["finetune", "freeze_backbone"] = "finetune"
    frontend: Literal["none", "srm"] = "none"
    frontend_options: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.5


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 2e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["step", "cosine"] = "step"
    """``step``: lr x ``gamma`` every ``step_size`` epochs (the paper); ``cosine``: decay to 0 over ``epochs``."""
    step_size: int = 7
    gamma: float = 0.9
    warmup_epochs: int = 0
    """Linear warm-up: epoch e (from 0) of the first ``warmup_epochs`` runs at lr x (e + 1) / (warmup_epochs + 1)."""
    lr_scaling: Literal["none", "linear"] = "none"
    """How ``lr`` follows the number of processes: ``none`` keeps it; ``linear`` multiplies it by the global batch
    (``data.batch_size``, which is per process, x processes) over ``lr_base_batch_size``."""
    lr_base_batch_size: int | None = None
    """The global batch ``lr`` was tuned for (``linear`` scaling); ``None``: one process's ``data.batch_size``."""
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    """Mixup (Zhang et al. 2018): images and targets blended with a Beta(alpha, alpha) weight; 0 turns it off."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights (e.g. 0.99 per step) and evaluate and save it."""
    ema_warmup: bool = False
    """Ramp the average's decay up as ``min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates (as timm's EMA
    warm-up does), so that a run of a few hundred steps is not averaged with its first, untrained weights."""
    keep: Literal["best", "last"] = "best"
    """Which checkpoint a run hands on (to evaluation, distillation, comparisons): lowest-``monitor`` or final."""
    deterministic: bool = False
    """Bit-identical weights for one seed across processes on CPU (deterministic kernels; slower)."""
    class_balance: Literal["none", "loss", "sampler"] = "loss"
    aux_loss_weight: float = 0.4
    early_stopping_patience: int | None = 10
    monitor: Literal["val_loss", "val_accuracy", "val_roc_auc"] = "val_loss"
    amp: Literal["auto", "on", "off"] = "auto"
    device: str = "auto"
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    threads: int | None = None
    """CPU threads for torch (``None``: torch's default). 1 is faster on a machine busy with other jobs."""
    log_every: int = 10
    checkpoint_every: int = 1
    """Epochs between resume checkpoints (``last.*``); the final epoch and an interrupt always save. An AlexNet
    resume state is ~0.7 GB, so short runs (the demo) save it once instead of every epoch."""


@dataclass
class DistillConfig:
    teacher: str | list[str] | None = None
    """Teacher checkpoint, or a list of them (an ensemble: the mean of their tempered probabilities is the soft
    target); without one the config trains the model plainly."""
    loss: str = "kd"
    temperature: float = 1.0
    alpha: float = 0.5
    """Weight of the soft (teacher) term; ``1 - alpha`` weighs the hard-label cross-entropy."""
    scale_by_t2: bool = True
    teacher_outputs: Literal["online", "cached"] = "cached"

    def __post_init__(self) -> None:
        if isinstance(self.teacher, list) and not self.teacher:
            raise ConfigError("distill.teacher: an empty list names no teacher; give one checkpoint, a list of "
                              "them, or null to train without one")
        if isinstance(self.teacher, list) and len(set(self.teacher)) != len(self.teacher):
            raise ConfigError(f"distill.teacher: {self.teacher} names a checkpoint twice; an ensemble's members "
                              f"weigh equally, so list each once")

    @property
    def teachers(self) -> list[str]:
        """The teacher checkpoints, one or several (empty: no distillation)."""
        if self.teacher is None:
            return []
        return list(self.teacher) if isinstance(self.teacher, list) else [self.teacher]


@dataclass
class EvaluationConfig:
    threshold_policy: Literal["youden", "min_sensitivity", "fixed"] = "youden"
    """How the operating threshold is chosen on the validation split after training: ``youden`` maximises
    sensitivity + specificity - 1; ``min_sensitivity`` takes the highest threshold whose sensitivity reaches
    ``min_sensitivity``; ``fixed`` stores ``fixed_threshold``."""
    min_sensitivity: float = 0.98
    fixed_threshold: float = 0.5
    n_bootstrap: int = 1000
    """Patient-bootstrap resamples behind the 95 % intervals of the post-training evaluation."""


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_value(value: Any, hint: Any, key: str) -> Any:
    """Coerce ``value`` to ``hint`` where that is lossless; raise ``ConfigError`` otherwise."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as true/false
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_types = typing.get_args(hint)
        if len(value) != len(item_types):
            raise ConfigError(f"{key}: expected {len(item_types)} values, got {len(value)}")
        return tuple(_check_value(v, t, key) for v, t in zip(value, item_types, strict=True))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(hint)
        return [_check_value(v, item_type, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as text; accept numbers written that way.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {hint!r}")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]!r}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, key)
        else:
            kwargs[name] = _check_value(value, hint, key)
    return cls(**kwargs)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise OverrideError(f"override {override!r} must look like section.key=value")
    dotted, text = override.split("=", 1)
    node = raw
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise OverrideError(f"override {override!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    """An experiment config from plain data (a checkpoint's stored config, say), checked key by key."""
    return dataclass_from_dict(ExperimentConfig, raw, overrides)


def dataclass_from_dict(cls: type, raw: dict[str, Any], overrides: list[str] | None = None) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"a config is a mapping of sections (data:, model:, train:, ...), not {raw!r:.60}")
    raw = _deep_copy(raw)
    settings = _build(cls, raw, "")  # the file's own settings first, so that each error names its source
    for override in overrides or []:
        _apply_override(raw, override)
        try:
            settings = _build(cls, raw, "")
        except ConfigError as error:
            raise OverrideError(f"override {override!r}: {error}") from None
    return settings


def load_dataclass(cls: type, source: Path | Traversable | None, overrides: list[str] | None = None,
                   label: str | None = None) -> Any:
    """Any settings dataclass from a YAML file (a path or a packaged resource) and dotted overrides.

    ``None`` starts from the defaults. ``label`` names the file in errors (a preset's name reads better there
    than the place it was installed in); default: the path.
    """
    raw: dict[str, Any] = {}
    where = label or str(source)
    if source is not None:
        if not source.is_file():
            raise ConfigError(f"config file {where} does not exist")
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(f"{where}: not valid YAML (UTF-8 text): {error}") from error
    try:
        return dataclass_from_dict(cls, raw, overrides)
    except OverrideError:
        raise
    except ConfigError as error:
        prefix = f"{where}: " if source is not None else ""
        raise ConfigError(f"{prefix}{error}") from None


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    """Write ``config`` as plain YAML, which :func:`~cxrdistill.config.load_config` reads back to the same value."""
    atomic_write_text(path, yaml.safe_dump(plain_data(config.to_dict()), sort_keys=False))


def plain_data(value: Any) -> Any:
    """Tuples become lists so the YAML stays plain data (no python/tuple tags)."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}
