"""Official transformer checkpoint I/O: strict loading and a safetensors cache.

The official DiT files (``mp_rank_00_model_states.pt`` and ``mp_rank_00_model_states_distill.pt``)
are ``torch.save({"module": state_dict})`` containers. They are read with
``torch.load(weights_only=True, mmap=True)`` only -- never with unrestricted unpickling -- and
checked key by key and shape by shape before anything is loaded. Our module names equal the
official ones, so no key conversion is needed (``KEY_RENAMES`` stays empty; it is where a
rename would go).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from gamecraft.model import GameCraftTransformer, TransformerConfig, parameter_dtype

logger = logging.getLogger(__name__)

CONTAINER_KEYS = ("module", "ema")
# official key -> our key. Empty: the modules use the official names.
KEY_RENAMES: dict[str, str] = {}
CACHE_FORMAT = "gamecraft-transformer-state-dict-v1"
_LIST_LIMIT = 20


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (unsafe pickle, unknown container, wrong contents)."""


class CheckpointMismatchError(CheckpointError):
    """The state dict's keys or shapes differ from the model's."""

    def __init__(
        self, source: str, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]]
    ):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f"checkpoint {source} does not match the GameCraft transformer:"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mismatched keys (checkpoint vs model)", [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in mismatched]),
        ):
            if items:
                shown = ", ".join(items[:_LIST_LIMIT])
                more = f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
                lines.append(f"  {len(items)} {title}: {shown}{more}")
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Reading the official container
# ----------------------------------------------------------------------------------------------


def _torch_load_safely(path: Path):
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            # Legacy (non-zip) serialization cannot be memory-mapped; still weights_only.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint (loading it would need "
            f"unrestricted unpickling, i.e. arbitrary code execution). torch says: {err}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read {path} as a torch checkpoint: {err}") from None


def read_official_checkpoint(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """State dict of an official ``{"module": sd}`` (or ``{"ema": sd}``) ``.pt`` file (CPU, mmap).

    ``key`` picks the entry; by default ``"module"``, else ``"ema"``. Raises :class:`CheckpointError`
    for unsafe pickles, unknown containers and non-tensor values.
    """
    path = Path(path)
    container = _torch_load_safely(path)
    if not isinstance(container, Mapping):
        raise CheckpointError(f"{path}: expected a dict container, got {type(container).__name__}")
    if key is None:
        key = next((k for k in CONTAINER_KEYS if k in container), None)
        if key is None:
            raise CheckpointError(
                f"{path}: no {' or '.join(repr(k) for k in CONTAINER_KEYS)} entry "
                f"(top-level keys: {sorted(map(str, container))[:_LIST_LIMIT]})"
            )
    elif key not in container:
        raise CheckpointError(f"{path}: no {key!r} entry (top-level keys: {sorted(map(str, container))})")
    state_dict = container[key]
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}[{key!r}] is a {type(state_dict).__name__}, not a state dict")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}[{key!r}] has non-tensor entries: {bad[:_LIST_LIMIT]}")
    return {KEY_RENAMES.get(k, k): v for k, v in state_dict.items()}


def save_official_checkpoint(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, key: str = "module"
) -> Path:
    """Write ``torch.save({key: state_dict})`` -- the official container layout -- atomically."""
    if key not in CONTAINER_KEYS:
        raise ValueError(f"key must be one of {CONTAINER_KEYS}, got {key!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({key: {k: v.detach().contiguous() for k, v in state_dict.items()}}, tmp)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------
# Strict key/shape check
# ----------------------------------------------------------------------------------------------


def expected_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Official parameter names -> shapes for ``config`` (built on the meta device, no memory)."""
    model = GameCraftTransformer(config, dtype=torch.float32, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str = "state dict"
) -> None:
    """Raise :class:`CheckpointMismatchError` unless keys and shapes match exactly
    (and every tensor is floating point)."""
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = sorted(
        (k, tuple(v.shape) if v.is_floating_point() else (f"non-float {v.dtype}",), tuple(expected[k]))
        for k, v in state_dict.items()
        if k in expected and (tuple(v.shape) != tuple(expected[k]) or not v.is_floating_point())
    )
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)


# ----------------------------------------------------------------------------------------------
# safetensors cache
# ----------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Stream tensors to a .safetensors file one at a time (no second in-memory copy of the
    whole state dict, unlike ``safetensors.torch.save_file``); written atomically."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for tensor in tensors.values():
            data = tensor.detach().to("cpu").contiguous().reshape(-1)
            if data.numel():
                f.write(memoryview(data.view(torch.uint8).numpy()))
    os.replace(tmp, path)


def cache_path_for(checkpoint: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the safetensors cache of ``checkpoint`` lives: beside it, or in ``cache_dir``."""
    checkpoint = Path(checkpoint)
    directory = Path(cache_dir) if cache_dir is not None else checkpoint.parent
    return directory / (checkpoint.stem + ".safetensors")


def _source_fingerprint(checkpoint: Path, key: str | None) -> dict[str, str]:
    stat = checkpoint.stat()
    return {
        "format": CACHE_FORMAT,
        "source_name": checkpoint.name,
        "source_size": str(stat.st_size),
        "source_key": key or "auto",
    }


def write_cache(
    checkpoint: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    *,
    key: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``state_dict`` as ``checkpoint``'s safetensors cache (:func:`cache_path_for`), tagged with the
    ``.pt``'s name, size and ``key`` so :func:`load_checkpoint_state_dict` takes it while the ``.pt`` is not
    newer; returns its path. ``checkpoint`` must exist (its size is part of the tag)."""
    checkpoint = Path(checkpoint)
    cache = cache_path_for(checkpoint, cache_dir)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(cache, state_dict, _source_fingerprint(checkpoint, key))
    return cache


def _cache_matches(f, checkpoint: Path, key: str | None, expected_keys: set[str]) -> bool:
    """An open safetensors cache was made from ``checkpoint`` (same name/size/key) with exactly these keys."""
    return (f.metadata() or {}) == _source_fingerprint(checkpoint, key) and set(f.keys()) == expected_keys


def cache_is_current(
    checkpoint: str | os.PathLike,
    config: TransformerConfig | None = None,
    *,
    key: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> bool:
    """Whether :func:`load_checkpoint_state_dict` would read ``checkpoint``'s safetensors cache (and
    so write nothing): the check it makes, from the header alone."""
    from safetensors import safe_open

    checkpoint = Path(checkpoint)
    cache = cache_path_for(checkpoint, cache_dir)
    if not checkpoint.is_file() or not cache.is_file() or cache.stat().st_mtime_ns < checkpoint.stat().st_mtime_ns:
        return False
    try:
        with safe_open(str(cache), framework="pt", device="cpu") as f:
            return _cache_matches(f, checkpoint, key, set(expected_shapes(config or TransformerConfig())))
    except Exception:  # noqa: BLE001 - unreadable: the loader would ignore it too
        return False


def _read_cache(
    cache: Path,
    checkpoint: Path,
    key: str | None,
    expected_keys: set[str],
    convert: Callable[[str, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor] | None:
    from safetensors import safe_open

    if not cache.is_file() or cache.stat().st_mtime_ns < checkpoint.stat().st_mtime_ns:
        return None
    try:
        with safe_open(str(cache), framework="pt", device="cpu") as f:
            if not _cache_matches(f, checkpoint, key, expected_keys):
                logger.info("ignoring stale safetensors cache %s", cache)
                return None
            # Converted one tensor at a time, so at most one CPU copy is alive.
            return {k: convert(k, f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except Exception as err:  # a truncated/corrupt cache is only a cache: fall back to the .pt
        logger.warning("ignoring unreadable safetensors cache %s: %s", cache, err)
        return None


def load_checkpoint_state_dict(
    checkpoint: str | os.PathLike,
    config: TransformerConfig | None = None,
    *,
    key: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Checked state dict of an official checkpoint, via the safetensors cache when it is valid.

    The cache (:func:`cache_path_for`) is used when it is newer than the ``.pt``, was made from a
    file of the same name/size/key and holds exactly the expected keys; otherwise the ``.pt`` is
    read, checked strictly and (if ``use_cache``) the cache is (re)written. A failed cache write
    (e.g. read-only weights directory) only logs a warning. Tensors end up on ``device``; with
    ``dtype`` each is converted to its policy dtype (:func:`parameter_dtype`), one at a time.
    """
    checkpoint = Path(checkpoint)
    expected = expected_shapes(config or TransformerConfig())

    def convert(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=device, dtype=tensor.dtype if dtype is None else parameter_dtype(name, dtype))

    cache = cache_path_for(checkpoint, cache_dir)
    if use_cache:
        state_dict = _read_cache(cache, checkpoint, key, set(expected), convert)
        if state_dict is not None:
            check_state_dict(state_dict, expected, source=str(cache))
            logger.info("loaded transformer weights from cache %s", cache)
            return state_dict
    state_dict = read_official_checkpoint(checkpoint, key)
    check_state_dict(state_dict, expected, source=str(checkpoint))
    if use_cache:
        try:
            write_cache(checkpoint, state_dict, key=key, cache_dir=cache_dir)
            logger.info("wrote safetensors cache %s", cache)
        except OSError as err:
            logger.warning("could not write safetensors cache %s: %s", cache, err)
    # The .pt tensors are memory-mapped; dropping each after conversion keeps one copy alive.
    return {name: convert(name, state_dict.pop(name)) for name in list(state_dict)}


def load_transformer(
    checkpoint: str | os.PathLike,
    config: TransformerConfig | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    key: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> GameCraftTransformer:
    """Build the transformer on the meta device and load an official checkpoint into it (strict).

    Parameters end up on ``device`` in ``dtype``, except ``final_layer.linear.*`` and
    ``camera_net.*`` which are float32 (the reference's dtype policy). The weights are never
    allocated twice (``assign=True``). Returns the model in eval mode with gradients disabled.
    """
    config = config or TransformerConfig()
    state_dict = load_checkpoint_state_dict(
        checkpoint, config, key=key, cache_dir=cache_dir, use_cache=use_cache, device=device, dtype=dtype
    )
    model = GameCraftTransformer(config, dtype=dtype, device="meta")
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval().requires_grad_(False)
