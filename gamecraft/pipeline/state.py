"""World state files: continue a world in a later request, losslessly (safetensors + JSON, no pickle).

A state holds what the next chunk needs — the last 9 latent frames (``last_latents``; a fresh start
from an image holds the image's single latent frame) — plus JSON metadata: format version, model,
resolution, seed and the number of chunks done (per-chunk noise is derived from ``(seed, chunk index)``,
so a continued world draws exactly the noise an uninterrupted run would), the cumulative camera pose
(for previews) and the actions so far.

Format versions: 2 holds ``last_latents`` only. Version 1 also held a reference latent (``ref_latents``,
the last latent frame again, which only a parity check read); version-1 files still load: their
``ref_latents`` is checked like the rest and then dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gamecraft.specs.errors import RequestError
from gamecraft.specs.geometry import LATENT_CHANNELS, SPATIAL_COMPRESSION

FORMAT = "gamecraft-world-state"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# The tensors each readable version holds.
_TENSORS = {1: ("last_latents", "ref_latents"), 2: ("last_latents",)}
MODEL_ID = "hunyuan-gamecraft-1.0"
MAX_STATE_BYTES = 256 * 1024 * 1024


class StateError(RequestError):
    """A state file that cannot be used; the message says why."""


@dataclass
class WorldState:
    """``last_latents`` [1, 16, 1 | 9, h, w] (float32, VAE-scaled): the next chunk's known history.

    ``pose`` is the 4×4 camera-to-world pose where the next chunk starts (action units), in the
    frame of the world's first frame.
    """

    last_latents: torch.Tensor
    height: int
    width: int
    seed: int
    chunks_done: int
    prompt: str = ""
    pose: list[list[float]] = field(default_factory=lambda: np.eye(4).tolist())
    actions: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        meta = {k: v for k, v in asdict(self).items() if k != "last_latents"}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": MODEL_ID, **meta}


def save_state(state: WorldState, path: str | Path) -> Path:
    """Write ``state`` to ``path`` (safetensors with the metadata as JSON), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {"last_latents": state.last_latents.detach().float().cpu().contiguous()}
    try:
        save_file(tensors, str(tmp), metadata={"gamecraft": json.dumps(state.metadata())})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise StateError(f"state file: {message}")


def _int(meta: dict, key: str, low: int, high: int) -> int:
    value = meta.get(key)
    _require(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        f"'{key}' must be an integer in [{low}, {high}], got {value!r}",
    )
    return value


def load_state(path: str | Path, height: int | None = None, width: int | None = None) -> WorldState:
    """Read and validate a state file. ``height``/``width``, when given, must match the state's.

    Refuses (``StateError``, a ``ValueError``) anything that is not a complete GameCraft state of
    this format version: pickles and other files, truncated files, foreign metadata, wrong shapes or
    dtypes, non-finite latents, a resolution other than the requested one.
    """
    path = Path(path)
    size = path.stat().st_size
    _require(size <= MAX_STATE_BYTES, f"{size} bytes; at most {MAX_STATE_BYTES} are accepted")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw_meta = (handle.metadata() or {}).get("gamecraft")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise StateError(f"state file: not a readable safetensors file ({err})") from None
    _require(raw_meta is not None, "no GameCraft metadata (not a state saved by this package)")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise StateError("state file: metadata is not valid JSON") from None
    _require(isinstance(meta, dict) and meta.get("format") == FORMAT, "not a GameCraft world state")
    version = meta.get("format_version")
    _require(
        version in READABLE_VERSIONS,
        f"format version {version!r}; this package reads versions "
        f"{', '.join(map(str, READABLE_VERSIONS[:-1]))} and {READABLE_VERSIONS[-1]}",
    )
    _require(meta.get("model") == MODEL_ID, f"made for model {meta.get('model')!r}, not {MODEL_ID}")
    state_h = _int(meta, "height", 16, 4096)
    state_w = _int(meta, "width", 16, 4096)
    seed = _int(meta, "seed", 0, 2**63 - 1)
    chunks_done = _int(meta, "chunks_done", 0, 1_000_000)
    if height is not None and width is not None:
        _require(
            (state_h, state_w) == (height, width),
            f"made at {state_h}×{state_w}; this request generates {height}×{width}",
        )
    expected = _TENSORS[version]
    _require(
        set(tensors) == set(expected),
        f"expected tensor{'s' if len(expected) > 1 else ''} {' and '.join(expected)}, found {sorted(tensors)}",
    )
    latent_hw = (state_h // SPATIAL_COMPRESSION, state_w // SPATIAL_COMPRESSION)
    frames_of = {"last_latents": (1, 9) if chunks_done == 0 else (9,), "ref_latents": (1,)}
    for name in expected:
        tensor, frames = tensors[name], frames_of[name]
        _require(tensor.dtype in (torch.float32, torch.float16, torch.bfloat16), f"{name} has dtype {tensor.dtype}")
        _require(
            tensor.ndim == 5
            and tensor.shape[0] == 1
            and tensor.shape[1] == LATENT_CHANNELS
            and tensor.shape[2] in frames
            and tuple(tensor.shape[3:]) == latent_hw,
            f"{name} has shape {tuple(tensor.shape)}; expected [1, {LATENT_CHANNELS}, "
            f"{'|'.join(map(str, frames))}, {latent_hw[0]}, {latent_hw[1]}]",
        )
        _require(bool(torch.isfinite(tensor).all()), f"{name} contains NaN or infinite values")
    pose = meta.get("pose", np.eye(4).tolist())
    _require(
        isinstance(pose, list)
        and np.asarray(pose, dtype=object).shape == (4, 4)
        and all(isinstance(v, (int, float)) and math.isfinite(v) for row in pose for v in row),
        "'pose' must be a 4×4 list of finite numbers",
    )
    prompt = meta.get("prompt", "")
    actions = meta.get("actions", [])
    _require(isinstance(prompt, str), "'prompt' must be a string")
    _require(
        isinstance(actions, list) and all(isinstance(a, str) for a in actions), "'actions' must be a list of strings"
    )
    return WorldState(
        last_latents=tensors["last_latents"].float(),
        height=state_h,
        width=state_w,
        seed=seed,
        chunks_done=chunks_done,
        prompt=prompt,
        pose=[[float(v) for v in row] for row in pose],
        actions=list(actions),
    )
