"""Structured-config schemas: every config group is validated against one dataclass here.

Hydra rejects unknown keys and wrong types by itself (the configs are structured); the
``__post_init__`` hooks add the range checks Hydra cannot express, and run when
``OmegaConf.to_object`` turns the composed config into these dataclasses, before any
TensorFlow import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from src.core.files import project_root, write_problem


class ConfigError(ValueError):
    """A configuration value is out of range; the message is one line that says what to do."""


# What a run's training budget can be counted in (src/run/budget.py); flops and seconds end a
# run part-way through an epoch, with evaluations at eval.fractions equal shares of the budget.
BUDGET_UNITS = ("epochs", "flops", "seconds")
BUDGET_EXAMPLES = {"flops": "2.0e13", "seconds": 120}
MNIST_SIZE = 28  # the side of MNIST's own images: data.image_size goes up to it
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # safe in run names, folder names and filters


def check_writable(folder: Path, key: str) -> None:
    """Fail early, in one line, when ``folder`` (the config's ``key``) cannot be created or
    written (:func:`src.core.files.write_problem`)."""
    problem = write_problem(folder)
    if problem is not None:
        raise ConfigError(
            f"cannot write to {folder} ({problem}); set {key} to a folder you can write"
        )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class PathsConfig:
    root: str = "${project_root:}"
    cache_dir: str = "${paths.root}/outputs/cache"
    checkpoint_dir: str = "${paths.root}/outputs/checkpoints"
    reports_dir: str = "${paths.root}/outputs/reports"
    output_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class UpsamplerConfig:
    name: str = MISSING
    factory: str = MISSING
    kernel_size: int = 3
    interpolation: str = "nearest"
    icnr: bool = True

    def __post_init__(self) -> None:
        from src.models.upsamplers import FACTORIES, INTERPOLATIONS  # keras-free at import time

        _require(
            NAME_PATTERN.fullmatch(self.name) is not None,
            f"upsampler.name={self.name!r} names runs and folders: use letters, digits, _ . -",
        )
        _require(
            self.factory in FACTORIES,
            f"upsampler.factory={self.factory!r} is unknown; use one of {sorted(FACTORIES)}",
        )
        _require(self.kernel_size >= 1, "upsampler.kernel_size must be >= 1")
        _require(
            self.interpolation in INTERPOLATIONS,
            f"upsampler.interpolation={self.interpolation!r} is not one of Keras' UpSampling2D "
            f"interpolations {list(INTERPOLATIONS)}",
        )


@dataclass
class DataConfig:
    path: str | None = None
    method: str = "area"
    image_size: int = 10
    validation: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        from src.data.mnist import RESIZE_METHODS

        _require(
            self.method in RESIZE_METHODS,
            f"data.method={self.method!r} is unknown; use one of {list(RESIZE_METHODS)}",
        )
        _require(
            2 <= self.image_size <= MNIST_SIZE,
            f"data.image_size={self.image_size} must be in [2, {MNIST_SIZE}]: MNIST's digits are "
            f"{MNIST_SIZE}x{MNIST_SIZE}, and a larger size would only enlarge them",
        )
        _require(
            self.limit is None or self.limit >= 1,
            f"data.limit={self.limit} must be a positive number of images (or null for all)",
        )
        _require(
            0 <= self.validation < 50_000,
            f"data.validation={self.validation} must be in [0, 50000): the training images "
            "held out for scoring a search (0: score on the test split)",
        )


# What may follow each hidden upsampling step before its LeakyReLU (src/models/networks.py)
GENERATOR_NORMS = ("none", "batch")


@dataclass
class GeneratorConfig:
    latent_dim: int = 100
    base_channels: int = 128
    base_size: int = 5
    steps: int = 1
    step_channels: list[int] = field(default_factory=list)
    norm: str = "none"
    leaky_slope: float = 0.2

    def __post_init__(self) -> None:
        _require(self.latent_dim >= 1, f"generator.latent_dim={self.latent_dim} must be >= 1")
        _require(self.base_channels >= 1, "generator.base_channels must be >= 1")
        _require(self.base_size >= 1, "generator.base_size must be >= 1")
        _require(self.steps >= 1, f"generator.steps={self.steps} must be >= 1 (x2 each)")
        _require(
            len(self.step_channels) == self.steps - 1,
            f"generator.step_channels has {len(self.step_channels)} entries but "
            f"generator.steps={self.steps} has {self.steps - 1} hidden steps: give one feature "
            "map count per hidden step (the last step makes the image)",
        )
        _require(all(c >= 1 for c in self.step_channels), "generator.step_channels must be > 0")
        _require(
            self.norm in GENERATOR_NORMS,
            f"generator.norm={self.norm!r} is unknown; use one of {list(GENERATOR_NORMS)}",
        )
        _require(
            self.steps > 1 or self.norm == "none",
            f"generator.norm={self.norm} follows hidden steps, and generator.steps=1 has none: "
            "leave generator.norm=none, or add steps",
        )
        # the hidden steps' LeakyReLU reads the sign of its input from its output
        _require(self.leaky_slope >= 0, "generator.leaky_slope must be >= 0")

    @property
    def image_size(self) -> int:
        """The side of the images this generator makes: base_size doubled ``steps`` times."""
        return self.base_size * 2**self.steps


@dataclass
class DiscriminatorConfig:
    filters: list[int] = field(default_factory=lambda: [64, 64])
    kernel_size: int = 3
    strides: int = 2
    leaky_slope: float = 0.2
    dropout: float = 0.4

    def __post_init__(self) -> None:
        # >= 0: the discriminator's LeakyReLU reads the sign of its input from its output
        _require(self.leaky_slope >= 0, "discriminator.leaky_slope must be >= 0")
        _require(len(self.filters) >= 1, "discriminator.filters needs at least one layer")
        _require(all(f >= 1 for f in self.filters), "discriminator.filters must be positive")
        _require(0.0 <= self.dropout < 1.0, "discriminator.dropout must be in [0, 1)")


@dataclass
class TrainConfig:
    epochs: int = 10
    budget_unit: str = "epochs"
    budget: float | None = None
    batch_size: int = 128
    learning_rate: float = 2e-4
    d_learning_rate: float = 2e-4
    g_learning_rate: float = 2e-4
    beta_1: float = 0.5
    jit_compile: bool = False
    steps_per_execution: int = 16
    deterministic: bool = False
    verbose: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"train.epochs={self.epochs} must be >= 1")
        _require(self.batch_size >= 1, f"train.batch_size={self.batch_size} must be >= 1")
        for key in ("learning_rate", "d_learning_rate", "g_learning_rate"):
            value = getattr(self, key)
            _require(0.0 < value < 1.0, f"train.{key}={value} must be in (0, 1)")
        self._check_budget()
        _require(0.0 <= self.beta_1 < 1.0, f"train.beta_1={self.beta_1} must be in [0, 1)")
        _require(self.steps_per_execution >= 1, "train.steps_per_execution must be >= 1")
        _require(
            self.threads >= 0,
            f"train.threads={self.threads} must be >= 0 (0: TensorFlow's choice, every core)",
        )
        _require(
            self.verbose in ("auto", "0", "1", "2"),
            "train.verbose must be auto, 0, 1 or 2",
        )

    def _check_budget(self) -> None:
        _require(
            self.budget_unit in BUDGET_UNITS,
            f"train.budget_unit={self.budget_unit!r} is unknown; use one of {list(BUDGET_UNITS)}",
        )
        if self.budget_unit == "epochs":
            _require(
                self.budget is None,
                f"train.budget={self.budget} needs train.budget_unit=flops or seconds "
                "(an epochs budget is train.epochs)",
            )
            return
        _require(
            self.budget is not None and self.budget > 0,
            f"train.budget_unit={self.budget_unit} needs a train.budget > 0 "
            f"(e.g. train.budget={BUDGET_EXAMPLES[self.budget_unit]})",
        )


@dataclass
class EvalConfig:
    every_epochs: int = 2
    fractions: int = 5
    samples: int = 10_000
    seed: int = 2024

    def __post_init__(self) -> None:
        _require(self.every_epochs >= 1, f"eval.every_epochs={self.every_epochs} must be >= 1")
        _require(self.fractions >= 1, f"eval.fractions={self.fractions} must be >= 1")
        _require(self.samples >= 10, f"eval.samples={self.samples} must be >= 10")


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "upsamplers"
    artifact_location: str | None = None
    sample_seed: int = 1234
    sample_count: int = 48
    sample_columns: int = 12
    sample_zoom: int = 4
    outage_seconds: float = 240.0
    lock_seconds: float = 120.0

    def __post_init__(self) -> None:
        from src.tracking.store import LONGEST_OUTAGE

        _require(bool(self.experiment.strip()), "tracking.experiment must not be empty")
        _require(
            0 < self.outage_seconds <= LONGEST_OUTAGE,
            f"tracking.outage_seconds={self.outage_seconds} must be in (0, {LONGEST_OUTAGE:.0f}]"
            " (MLflow's retries cover at most that)",
        )
        _require(self.lock_seconds > 0, f"tracking.lock_seconds={self.lock_seconds} must be > 0")
        _require(self.sample_count >= 1, "tracking.sample_count must be >= 1")
        _require(self.sample_zoom >= 1, "tracking.sample_zoom must be >= 1")
        _require(self.sample_columns >= 0, "tracking.sample_columns must be >= 0 (0: square)")


@dataclass
class MarginConfig:
    fd: float | None = 2.0
    checkerboard: float | None = 0.1

    def __post_init__(self) -> None:
        for key in ("fd", "checkerboard"):
            value = getattr(self, key)
            _require(value is None or value > 0, f"report.margin.{key}={value} must be > 0")


@dataclass
class ReportConfig:
    margin: MarginConfig = field(default_factory=MarginConfig)


@dataclass
class SweepConfig:
    id: str | None = None

    def __post_init__(self) -> None:
        _require(
            self.id is None or NAME_PATTERN.fullmatch(self.id) is not None,
            f"sweep.id={self.id!r} is not a sweep id (they look like 2026-11-26_06-53-11-0a1b2c)",
        )


@dataclass
class TuneConfig:
    parent_run: str | None = None
    trial: int | None = None

    def __post_init__(self) -> None:
        _require(
            self.trial is None or self.parent_run is not None,
            "tune.trial needs tune.parent_run: both are set by make tune's sweeper",
        )


@dataclass
class Config:
    upsampler: UpsamplerConfig = MISSING
    data: DataConfig = MISSING
    generator: GeneratorConfig = MISSING
    discriminator: DiscriminatorConfig = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    eval: EvalConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    seed: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        made = self.generator.image_size
        _require(
            made == self.data.image_size,
            f"generator.base_size={self.generator.base_size} upsampled x2 generator.steps="
            f"{self.generator.steps} times makes {made}px images, but data.image_size="
            f"{self.data.image_size}; pick a setting (setting=mnist10|mnist20|mnist28) or fix one",
        )
        _require(self.seed >= 0, f"seed={self.seed} must be >= 0")
        # A batch larger than the training set would silently shrink to it: refused instead,
        # so the logged train.batch_size is the one trained with.
        _require(
            self.data.limit is None or self.data.limit >= self.train.batch_size,
            f"train.batch_size={self.train.batch_size} is larger than the {self.data.limit} "
            "training images of data.limit; lower train.batch_size or raise data.limit",
        )


GROUP_SCHEMAS: dict[str, type] = {
    "upsampler": UpsamplerConfig,
    "data": DataConfig,
    "generator": GeneratorConfig,
    "discriminator": DiscriminatorConfig,
    "train": TrainConfig,
    "tracking": TrackingConfig,
    "eval": EvalConfig,
}

NESTED_SCHEMAS: dict[str, type] = {
    **GROUP_SCHEMAS,
    "paths": PathsConfig,
    "report": ReportConfig,
    "sweep": SweepConfig,
    "tune": TuneConfig,
}


def register() -> None:
    """Store the schemas in Hydra's ConfigStore; YAML files extend them via ``defaults``."""
    from src.config import resources

    for name, resolver in (
        ("project_root", project_root),
        ("sweep_workers", resources.sweep_workers),
        ("job_threads", resources.job_threads),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    store = ConfigStore.instance()
    store.store(name="schema_config", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=f"schema/{group}", name="base", node=schema)


def to_settings(cfg: Any) -> Config:
    """Resolve a composed config into a validated :class:`Config` (raises :class:`ConfigError`).

    Keys added with Hydra's ``+key=value`` bypass the schema's struct mode, and ``to_object``
    would silently drop them, so they are looked for first.
    """
    _reject_unknown_keys(cfg, Config, "")
    return OmegaConf.to_object(cfg)


def compose(*overrides: str) -> Config:
    """The project's config with Hydra ``overrides``, composed as the CLI does and validated
    (for tools and tests; ``paths.output_dir`` is the working dir unless overridden)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    conf = Path(project_root()) / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=["paths.output_dir=.", *overrides])
    return to_settings(cfg)


SQL_PREAMBLE = "(raised as a result of"  # e.g. "... Query-invoked autoflush; ...)"


def one_line(error: BaseException) -> str:
    """An error as one line for the user: this module's errors as they are; Hydra's composition
    and override errors without the config search path they list, with their cause's first
    line; any other error as its type and first line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, ConfigError):
        return str(error)
    if isinstance(error, OmegaConfBaseException):  # its message ends in a key/type dump
        return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    if not isinstance(error, HydraException):
        # SQLAlchemy starts some messages with how the error was raised, not what it was
        lines = [line for line in str(error).splitlines() if not line.startswith(SQL_PREAMBLE)]
        return f"{type(error).__name__}: {(lines or [''])[0]}".rstrip(": ")
    lines = []
    for line in str(error).splitlines():
        if line.startswith("Config search path"):
            break  # Hydra's search path: noise for a user who mistyped an override
        if line.strip():
            lines.append(line.strip())
    if error.__cause__ is not None:
        lines.append((str(error.__cause__).splitlines() or [""])[0])
    return " ".join(lines)


def _reject_unknown_keys(node: Any, schema: type, prefix: str) -> None:
    known = {item.name for item in fields(schema)}
    for key in node:
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}{key}'; `--cfg job` lists the keys")
        if not prefix and key in NESTED_SCHEMAS:
            _reject_unknown_keys(node[key], NESTED_SCHEMAS[key], f"{key}.")
