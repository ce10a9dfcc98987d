"""Every knob of the bot, read from the environment and ``.env`` through pydantic-settings.

Each setting is the environment variable ``IMAGINEBOT_<NAME>`` (``.env.example`` lists them all). An invalid
value stops start-up with a ConfigError naming the variable, what is wrong with the value and what is
allowed. The Discord token is a SecretStr: it is never printed, logged, or echoed in an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imaginebot.catalog import (
    LCM_DEFAULTS,
    TURBO_DEFAULTS,
    Catalog,
    ModelEntry,
    ModelInfo,
    model_defaults,
    parse_models,
)
from imaginebot.engine.api import DEFAULT_SAMPLER, SAMPLERS
from imaginebot.engine.planning import Planner
from imaginebot.engine.single_file import is_single_file
from imaginebot.errors import ConfigError
from imaginebot.params import CFG_RANGE, IMAGES_RANGE, MAX_ASPECT, STEPS_RANGE, RequestDefaults, parse_aspect

ENV_PREFIX = "IMAGINEBOT_"
PACKAGE_DIR = Path(__file__).resolve().parent
EMBEDDED_MODEL = PACKAGE_DIR / "models" / "shapes-64"

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# What the embedded model draws best with (MODEL.md); used when the model is the embedded one and the
# operator did not set these themselves.
EMBEDDED_DEFAULTS: dict[str, Any] = {"steps": 20, "cfg": 5.0, "sampler": "euler_a"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # "IMAGINEBOT_DISCORD_TOKEN=" in .env means unset, not an empty token
        frozen=True,
        validate_default=True,
    )

    discord_token: SecretStr | None = Field(
        None, description="the bot token from the Discord developer portal; not needed with --mock"
    )
    discord_url: str | None = Field(
        None,
        description="base URL of a Discord-compatible server, e.g. http://127.0.0.1:8080 (default: Discord)",
    )
    guild_id: int | None = Field(
        None, ge=1, description="a server id: slash commands are synced there at once instead of globally"
    )
    model: str = Field(
        "",
        description="a checkpoint: a .safetensors file (SD 1.x, 2.x, SDXL), a diffusers-format folder or a "
        "hub id in the local cache (empty: the embedded model)",
    )
    models: str | None = Field(
        None,
        description="several checkpoints as name=path entries separated by commas, the first the default, "
        "each optionally with its own steps=, cfg=, sampler=, size= (in place of IMAGINEBOT_MODEL)",
    )
    lora_dir: Path | None = Field(
        None, description="a folder of LoRA files (.safetensors) that prompts use with --lora name:weight"
    )
    safety_checker: Path | None = Field(
        None,
        description="a folder with diffusers' StableDiffusionSafetyChecker and its preprocessor_config.json "
        "(or a pipeline folder with safety_checker/ and feature_extractor/): flagged images are posted "
        "blurred as spoilers and wait for a moderator (none: no check)",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    devices: str | None = Field(
        None,
        description="several devices, one worker each, e.g. cuda:0,cuda:1 (default: the one device)",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto (fp16 on CUDA, fp32 elsewhere), float32, float16 or bfloat16"
    )
    data_dir: Path = Field(Path("data"), description="where the SQLite store and the images are kept")
    default_steps: int = Field(
        30,
        ge=STEPS_RANGE[0],
        le=STEPS_RANGE[1],
        description=f"steps when --steps is not given, {STEPS_RANGE[0]}-{STEPS_RANGE[1]}",
    )
    default_cfg: float = Field(
        7.0,
        ge=CFG_RANGE[0],
        le=CFG_RANGE[1],
        description=f"guidance when --cfg is not given, {CFG_RANGE[0]:g}-{CFG_RANGE[1]:g}",
    )
    default_images: int = Field(
        4,
        ge=IMAGES_RANGE[0],
        le=IMAGES_RANGE[1],
        description=f"images per /imagine when --images is not given, {IMAGES_RANGE[0]}-{IMAGES_RANGE[1]}",
    )
    default_sampler: str = Field(DEFAULT_SAMPLER, description="one of " + ", ".join(SAMPLERS))
    default_aspect: str = Field("1:1", description=f"W:H between 1:{MAX_ASPECT} and {MAX_ASPECT}:1")
    preview_every: int = Field(5, ge=1, le=150, description="steps between two preview edits")
    preview_min_interval: float = Field(
        1.0, ge=0.0, le=60.0, description="seconds at least between two edits of one message"
    )
    quota_per_day: int | None = Field(
        100,
        ge=0,
        description="images a user may make per UTC day unless a moderator set otherwise, or unlimited",
    )
    max_queued_per_user: int = Field(3, ge=1, le=100, description="jobs one user may have waiting at once")
    max_permutations: int = Field(
        10,
        ge=1,
        le=100,
        description="jobs one /imagine may make with {a, b} permutations and --repeat (the student is asked "
        "before more than one is queued)",
    )
    moderator_role: str | None = Field(
        None, description="name or id of a role whose members moderate (Manage Server always does)"
    )
    delivery_give_up_hours: float = Field(
        24.0,
        gt=0,
        le=24 * 14,
        description="hours after a job ends that its grid or error is still retried into Discord",
    )
    delivery_retry_max: float = Field(
        300.0, ge=0.1, le=3600, description="seconds at most between two tries to deliver a job's result"
    )
    batch_capacity: int | None = Field(
        None,
        ge=1,
        description="images of native size per UNet call, two per image with guidance (auto: measured on a "
        "GPU, 512 for the embedded model on a CPU; 1: one job at a time)",
    )
    ray_address: str | None = Field(
        None,
        description="a Ray cluster to run the workers on: auto, host:port or ray://host:10001 (default: "
        "local workers)",
    )
    ray_workers: int | None = Field(
        None,
        ge=1,
        description="Ray workers to place (default: one per GPU of the cluster, or 1 without GPUs)",
    )
    ray_cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each Ray worker takes")
    upscale_max_side: int = Field(2048, ge=64, le=8192, description="longest side of an upscaled image")
    mock_port: int = Field(8080, ge=0, le=65535, description="port of the local Discord (0: any free port)")
    mock_host: str = Field("127.0.0.1", description="address the local Discord listens on")
    web_host: str = Field(
        "127.0.0.1", description="address the gallery, /healthz and /metrics listen on (0.0.0.0: every one)"
    )
    web_port: int | None = Field(
        8081,
        ge=0,
        le=65535,
        description="port of the gallery, /healthz and /metrics (0: any free port; off: none)",
    )
    web_url: str | None = Field(
        None,
        description="the gallery's address as students' browsers reach it, e.g. "
        "http://lab-pc.school.lan:8081 or https://gallery.example.org behind a proxy (default: "
        "http://WEB_HOST:WEB_PORT; with 0.0.0.0, this machine's network address)",
    )
    gallery_link_hours: float = Field(
        24.0, gt=0, le=24 * 30, description="hours a link from /gallery works (then /gallery gives a new one)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="logging level")

    @field_validator("quota_per_day", mode="before")
    @classmethod
    def _unlimited(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == "unlimited" else value

    @field_validator("web_port", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == "off" else value

    @field_validator("safety_checker", mode="before")
    @classmethod
    def _no_checker(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == "none" else value

    @field_validator("safety_checker")
    @classmethod
    def _checker_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"{value} is not a folder (a safety checker in diffusers' layout, or none)")
        return value.expanduser() if value is not None else None

    @field_validator("batch_capacity", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "auto") else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        names = [name.strip() for name in value.split(",")]
        if not all(_DEVICE.fullmatch(name) for name in names):
            raise ValueError("must be devices separated by commas, each auto, cpu, cuda, cuda:N or mps")
        return ",".join(names)

    @field_validator("models")
    @classmethod
    def _models(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_models(value)  # its ValueError says which entry is wrong and what is allowed
        return value

    @field_validator("lora_dir")
    @classmethod
    def _lora_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"{value} is not a folder")
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> Settings:
        if self.model and self.models:
            raise ValueError("set IMAGINEBOT_MODEL or IMAGINEBOT_MODELS, not both")
        return self

    @field_validator("default_sampler")
    @classmethod
    def _sampler(cls, value: str) -> str:
        if value.lower() not in SAMPLERS:
            raise ValueError("must be one of " + ", ".join(SAMPLERS))
        return value.lower()

    @field_validator("default_aspect")
    @classmethod
    def _aspect(cls, value: str) -> str:
        width, height = parse_aspect(value)  # its ValueError says what is allowed
        return f"{width}:{height}"

    @field_validator("discord_url", "web_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/.*)?", value):
            raise ValueError("must be an http:// or https:// URL, like http://127.0.0.1:8080")
        return value.rstrip("/") if value else value

    @property
    def model_entries(self) -> tuple[ModelEntry, ...]:
        """The models to load, the default first: IMAGINEBOT_MODELS, or IMAGINEBOT_MODEL, or the embedded."""
        if self.models:
            return parse_models(self.models)
        if self.model:
            return (ModelEntry(model_name(self.model), self.model),)
        return (embedded_entry(),)

    @property
    def model_path(self) -> str:
        """The default model's path."""
        return self.model_entries[0].path

    @property
    def worker_devices(self) -> list[str]:
        """One device per local worker."""
        return self.devices.split(",") if self.devices else [self.device]

    @property
    def request_defaults(self) -> RequestDefaults:
        """The server's defaults, before any model's own (``catalog.model_defaults``)."""
        return RequestDefaults(
            steps=self.default_steps,
            cfg=self.default_cfg,
            sampler=self.default_sampler,
            images=self.default_images,
            aspect=parse_aspect(self.default_aspect),
        )

    @property
    def chosen_defaults(self) -> tuple[str, ...]:
        """The request defaults the operator set (steps, cfg, sampler): no model's kind changes them."""
        return tuple(
            name.removeprefix("default_")
            for name in ("default_steps", "default_cfg", "default_sampler")
            if name in self.model_fields_set
        )

    def catalog(self, planners: Mapping[str, Planner]) -> Catalog:
        """The models as the bot offers them, each with its own defaults; ``planners``: each model's, by
        name (from its configs). A model without a planner (loaded on no device) is left out."""
        entries = [entry for entry in self.model_entries if entry.name in planners]
        models = []
        for entry in entries:
            planner = planners[entry.name]
            preset = _preset(entry, planner)
            defaults = model_defaults(
                entry, self.request_defaults, preset=preset, chosen=self.chosen_defaults
            )
            if len(entries) == 1:
                defaults = replace(defaults, model="")  # one model: prompts need not name it
            native = entry.native_size(planner.native_size)
            models.append(ModelInfo(entry.name, entry.path, native, defaults, _kind(entry, native, planner)))
        return Catalog(tuple(models), self.lora_dir)


def _preset(entry: ModelEntry, planner: Planner) -> Mapping[str, Any]:
    """The defaults a model's kind draws best with."""
    if Path(entry.path) == EMBEDDED_MODEL:
        return EMBEDDED_DEFAULTS
    if entry.turbo:
        return TURBO_DEFAULTS
    return LCM_DEFAULTS if planner.guidance_embedded else {}


def _kind(entry: ModelEntry, native: int, planner: Planner) -> str:
    if Path(entry.path) == EMBEDDED_MODEL:
        what = "the embedded model"
    elif is_single_file(entry.path):
        what = "a single-file checkpoint"
    else:
        what = "a diffusers folder" if Path(entry.path).expanduser().is_dir() else "a cached hub model"
    distilled = " (Turbo)" if entry.turbo else " (LCM)" if planner.guidance_embedded else ""
    return f"{what}{distilled}, {native} px"


def embedded_entry() -> ModelEntry:
    return ModelEntry(EMBEDDED_MODEL.name, str(EMBEDDED_MODEL))


def model_name(path: str) -> str:
    """A name for a model given by its path or hub id alone: its file or folder name, as names are written."""
    stem = Path(path.rstrip("/")).name
    stem = Path(stem).stem if is_single_file(stem) else stem
    name = re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-._")[:32]
    return name or "model"


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README's table and .env.example."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = "" if info.default is None else str(info.default)
        rows.append((env_name(name), default, info.description or ""))
    return rows


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; an invalid value raises ConfigError with one line per problem.

    The offending value is quoted back, except the token's, which is never shown.
    """
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors(include_url=False):
            if not problem["loc"]:  # a rule across settings: its message names them
                lines.append(problem["msg"].removeprefix("Value error, "))
                continue
            field = str(problem["loc"][0])
            info = Settings.model_fields.get(field)
            shown = "" if field == "discord_token" else f"={problem.get('input')!r}"
            allowed = f" (allowed: {info.description})" if info and info.description else ""
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{env_name(field)}{shown}: {message}{allowed}")
        raise ConfigError("Invalid settings:\n  " + "\n  ".join(lines)) from None
