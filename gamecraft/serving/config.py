"""The one configuration of a GameCraft server, CLI run or benchmark: :class:`ServingConfig`.

Built once — :meth:`ServingConfig.from_env` (the predictor, the local server) or from command-line flags
on top of it (the CLI, benchmarks) — and passed to :func:`gamecraft.serving.build.build_service`. This
module is the only reader of GameCraft's own variables below. The library writes the environment in two
more places, for libraries underneath that take these settings only from there: ``serving/build.py`` sets
``TORCHINDUCTOR_CACHE_DIR`` (torch's compiler cache, beside the weights, unless the operator set it) and
``parallel/runtime.py`` sets the NCCL/NVSHMEM variables that keep NVLink multicast off before the GPU
workers start. (The controller page, ``python -m gamecraft.ui``, reads ``REPLICATE_API_TOKEN``.)

=============================  ======================================================================
``GAMECRAFT_WEIGHTS``          weights directory (default ``./weights``; ``COG_WEIGHTS`` too); ``tiny``: tiny
                               random weights for CPU smoke runs; ``random``: full-size random weights built
                               on the GPU (benchmarks, GPU smoke runs: outputs are noise)
``GAMECRAFT_PRELOAD``          presets whose transformer loads in setup (default ``distilled``)
``GAMECRAFT_GPUS``             GPUs to split every pass over (default: every visible one)
``GAMECRAFT_COMPILE``          ``0``: no ``torch.compile`` (default on a GPU: blocks and VAE decoder)
``GAMECRAFT_ATTENTION``        attention kernel (default ``auto``: chosen for the GPU)
``GAMECRAFT_TIME_BUDGET_S``    refuse requests estimated to take longer (default 1680 s)
``GAMECRAFT_KEEP_BOTH``        ``1``: keep both transformers on the GPU (default: the unused one waits in
                               pinned host memory)
``GAMECRAFT_DOWNLOAD``         ``0``: never download missing weights
``GAMECRAFT_WARM_GO_FAST``     ``0``: do not build and warm the go_fast (fp8) transformer in setup
``GAMECRAFT_VAE_COMPILE``      VAE tiles the compiled decoder covers: ``full`` (default: the full-size tiles,
                               82 % of the work) or ``all`` (every tile shape: 0.5 s less per chunk on an
                               H200, ≈ 95 s more to compile in a cold setup; BENCHMARKS.md)
``GAMECRAFT_TINY_SIZE``        ``HxW`` of tiny smoke runs (default ``128x224``)
``GAMECRAFT_GPU``              test hook: pretend the GPU is ``NAME:CAPABILITY:GIB`` (e.g. ``L40S:8.9:44.4``)
                               for the kernel and memory choices (the kernels still run on the real GPU)
``GAMECRAFT_WEIGHTS_URL``      HTTPS base URL of a prepared weights directory (``python -m gamecraft.weights
                               prepare``): fetched into the weights directory in parallel ranged requests,
                               verified against its manifest; the Hugging Face download stays the fallback
``HF_TOKEN``                   token for the gated Hugging Face repository
=============================  ======================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gamecraft.pipeline.presets import PRESETS
from gamecraft.specs.geometry import DEFAULT_SIZE

from .budget import DEFAULT_BUDGET_S

TINY_SIZE = (128, 224)
WEIGHT_SOURCES = ("tiny", "random")  # the non-directory values of ``weights``
VAE_COMPILE_SCOPES = ("full", "all")  # gamecraft.model.vae.GameCraftVae.compile_decoder's scopes


class ConfigError(ValueError):
    """A configuration value that cannot be used here; ``option`` names the :class:`ServingConfig` field
    so each entry point can name its own knob (``GAMECRAFT_GPUS=3: …``, ``--gpus 3: …``)."""

    def __init__(self, option: str, value, message: str):
        super().__init__(message)
        self.option, self.value = option, value


@dataclass(frozen=True)
class ServingConfig:
    """Every option of the engine and of serving it (see the module docstring for the environment names).

    ``weights``: a directory, ``"tiny"`` or ``"random"``. ``preload``: presets loaded in setup (the others
    load on first use). ``gpus``: None = every visible GPU. ``compile``: compiled blocks and VAE decoder
    when on a GPU. ``attention``: ``"auto"`` or a backend name. ``fallback_to_tiny``: when the real model
    cannot run here (no GPU, incomplete weights), run tiny random weights on the CPU instead of failing
    (the CLI and ``make run``; never the predictor). ``tiny_dir``: where tiny weights are written.
    ``cache_dir``: the transformers' safetensors copies (default ``<weights>/.safetensors-cache``);
    ``compile_cache``: keep compiled kernels beside them. ``warm_presets``: presets whose pass shapes the
    warm-up compiles and times (default: every preset, so no request compiles). ``gpu_override``: see
    ``GAMECRAFT_GPU``. ``vae_compile``: ``full`` or
    ``all`` (the tile shapes the compiled VAE decoder covers). ``weights_url``: see ``GAMECRAFT_WEIGHTS_URL``.
    """

    weights: str = "weights"
    preload: tuple[str, ...] = ("distilled",)
    gpus: int | None = None
    compile: bool = True
    attention: str = "auto"
    time_budget_s: float = DEFAULT_BUDGET_S
    keep_both: bool = False
    download: bool = True
    hf_token: str | None = field(default=None, repr=False)
    size: tuple[int, int] = DEFAULT_SIZE
    tiny_size: tuple[int, int] = TINY_SIZE
    fallback_to_tiny: bool = False
    tiny_dir: Path | None = None
    cache_dir: Path | None = None
    compile_cache: bool = True
    warm_presets: tuple[str, ...] | None = None
    warm_go_fast: bool = True
    gpu_override: str | None = None
    vae_compile: str = "full"
    weights_url: str | None = None

    def __post_init__(self) -> None:
        if self.vae_compile not in VAE_COMPILE_SCOPES:
            raise ValueError(f"vae_compile must be one of {', '.join(VAE_COMPILE_SCOPES)}, got {self.vae_compile!r}")
        unknown = [name for name in (*self.preload, *(self.warm_presets or ())) if name not in PRESETS]
        if unknown:
            raise ValueError(f"unknown presets {unknown}; expected {', '.join(PRESETS)}")
        if not self.preload:
            raise ValueError("preload at least one preset")
        if self.gpus is not None and self.gpus < 1:
            raise ValueError(f"gpus must be at least 1, got {self.gpus}")
        if self.time_budget_s <= 0:
            raise ValueError(f"the time budget must be positive, got {self.time_budget_s:g} s")
        for name, (height, width) in (("size", self.size), ("tiny size", self.tiny_size)):
            if height % 16 or width % 16 or height <= 0 or width <= 0:
                raise ValueError(f"{name} must be positive multiples of 16, got {height}x{width}")

    @property
    def weights_dir(self) -> Path | None:
        """The weights directory, or None for ``tiny``/``random``."""
        return None if self.weights in WEIGHT_SOURCES else Path(self.weights)

    @property
    def safetensors_cache(self) -> Path | None:
        if self.cache_dir is not None:
            return self.cache_dir
        return None if self.weights_dir is None else self.weights_dir / ".safetensors-cache"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> ServingConfig:
        """The configuration the environment describes (``overrides`` win); ``ValueError`` naming the
        variable for a value that cannot be used."""
        env = os.environ if environ is None else environ
        values: dict = {}
        weights = env.get("GAMECRAFT_WEIGHTS") or env.get("COG_WEIGHTS")
        if weights:
            values["weights"] = weights
        if "GAMECRAFT_PRELOAD" in env:
            values["preload"] = _names(env["GAMECRAFT_PRELOAD"], "GAMECRAFT_PRELOAD")
        if env.get("GAMECRAFT_GPUS"):
            values["gpus"] = _number(env, "GAMECRAFT_GPUS", int)
        for key, name in (
            ("compile", "GAMECRAFT_COMPILE"),
            ("keep_both", "GAMECRAFT_KEEP_BOTH"),
            ("download", "GAMECRAFT_DOWNLOAD"),
            ("warm_go_fast", "GAMECRAFT_WARM_GO_FAST"),
        ):
            if name in env:
                values[key] = _flag(env, name)
        if env.get("GAMECRAFT_VAE_COMPILE"):
            values["vae_compile"] = env["GAMECRAFT_VAE_COMPILE"]
        if env.get("GAMECRAFT_ATTENTION"):
            values["attention"] = env["GAMECRAFT_ATTENTION"]
        if env.get("GAMECRAFT_TIME_BUDGET_S"):
            values["time_budget_s"] = _number(env, "GAMECRAFT_TIME_BUDGET_S", float)
        if env.get("GAMECRAFT_TINY_SIZE"):
            values["tiny_size"] = parse_size(env["GAMECRAFT_TINY_SIZE"], "GAMECRAFT_TINY_SIZE")
        if env.get("GAMECRAFT_GPU"):
            values["gpu_override"] = env["GAMECRAFT_GPU"]
        if env.get("GAMECRAFT_WEIGHTS_URL"):
            values["weights_url"] = env["GAMECRAFT_WEIGHTS_URL"]
        if env.get("HF_TOKEN"):
            values["hf_token"] = env["HF_TOKEN"]
        values.update(overrides)
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"configuration: {err}") from None


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """``"HxW"`` → (H, W)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{what} must look like 704x1216, got {text!r}") from None
    return height, width


def _names(text: str, name: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"{name} names unknown presets {unknown}; expected {', '.join(PRESETS)}")
    return names


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env[name].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be 0 or 1, got {env[name]!r}")


def _number(env: Mapping[str, str], name: str, kind: type):
    try:
        return kind(env[name])
    except ValueError:
        raise ValueError(f"{name} must be a number, got {env[name]!r}") from None
