"""A prepared weights directory at setup: fetched (``GAMECRAFT_WEIGHTS_URL``), its ``.pt`` stand-ins
restored, its compiled kernels loaded — PyTorch's portable compile-cache artifacts.

``python -m gamecraft.weights prepare DIR`` (:mod:`gamecraft.serving.prepare`) compiles every pass shape
and stores ``torch.compiler.save_cache_artifacts()`` (Inductor's FX-graph and AOT-autograd cache entries
with their Triton kernels) as ``DIR/compiled/kernels.bin``; the manifest records the machine they were made
for. ``setup()`` hands them to ``torch.compiler.load_cache_artifacts`` before the first compilation when
the manifest's machine is this one, so the warm-up finds every graph in the cache instead of compiling it
(measured on an H100 in issue 27: 196.8 s → 110.7 s of ``build_service``). Otherwise one log line says why,
and the warm-up compiles as without them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import platform
from dataclasses import replace
from pathlib import Path

import torch

from gamecraft.weights.fetch import FetchError, fetch_directory
from gamecraft.weights.manifest import (
    FileEntry,
    Manifest,
    read_manifest,
    sha256_of,
    size_mismatches,
    write_manifest,
    write_stand_ins,
)

log = logging.getLogger(__name__)

KERNELS_FILE = "compiled/kernels.bin"
MACHINE_KEYS = ("gpu", "capability", "torch", "triton", "cuda")


def this_machine(device: str = "cuda") -> dict[str, object]:
    """What compiled kernels depend on: the GPU (name, compute capability; ``cpu`` and the architecture
    without one), torch, Triton and CUDA versions."""
    if device == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        gpu, capability = torch.cuda.get_device_name(0), f"{major}.{minor}"
    else:
        gpu, capability = f"cpu ({platform.machine()})", None
    return {
        "gpu": gpu,
        "capability": capability,
        "torch": torch.__version__,
        "triton": _version("triton") or _version("pytorch-triton"),
        "cuda": torch.version.cuda,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def mismatch_reason(recorded: dict, machine: dict) -> str | None:
    """None when kernels made on ``recorded`` run here, else what differs (one line)."""
    different = [key for key in MACHINE_KEYS if recorded.get(key) != machine.get(key)]
    if not different:
        return None
    return "; ".join(f"{key} {recorded.get(key)} there, {machine.get(key)} here" for key in different)


def load_kernels(weights_dir: Path | None, machine: dict) -> bool:
    """Load the compiled kernels of a prepared ``weights_dir`` when they were made for ``machine``; log one
    line either way. Call before anything compiles. False: the warm-up compiles."""
    if weights_dir is None:
        return False
    try:
        manifest = read_manifest(weights_dir)
    except ValueError as err:
        log.warning("compiled kernels not loaded: %s", err)
        return False
    if manifest is None or manifest.kernels is None:
        log.info("compiled kernels: none in %s (prepare it with python -m gamecraft.weights prepare)", weights_dir)
        return False
    reason = mismatch_reason(dict(manifest.machine), machine)
    if reason is not None:
        log.warning("compiled kernels not loaded (made for another machine: %s); compiling", reason)
        return False
    path = Path(weights_dir) / manifest.kernels
    entry = manifest.files.get(manifest.kernels)
    if not path.is_file() or entry is None or path.stat().st_size != entry.size:
        log.warning("compiled kernels not loaded: %s is missing or not the size the manifest records", path)
        return False
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        log.warning("compiled kernels not loaded: %s does not match the manifest's sha256; compiling", path)
        return False
    try:
        info = torch.compiler.load_cache_artifacts(data)
    except Exception as err:  # noqa: BLE001 - unreadable kernels cost a compilation, not the server
        log.warning("compiled kernels not loaded: %s: %s; compiling", type(err).__name__, err)
        return False
    count = sum(len(v) for v in info.artifacts.values()) if info is not None else 0
    log.info("compiled kernels loaded: %d cache entries, %.0f MB from %s", count, len(data) / 1e6, path)
    return count > 0


def save_kernels(weights_dir: Path, machine: dict) -> Path | None:
    """Store every compile-cache artifact this process made or read since it started (or since the last
    save) in ``weights_dir`` and record it in the manifest with ``machine``; None when nothing compiled."""
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return None
    data, _info = saved
    path = Path(weights_dir) / KERNELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    manifest = read_manifest(weights_dir) or Manifest({})
    files = {**manifest.files, KERNELS_FILE: FileEntry(len(data), sha256_of(path))}
    write_manifest(weights_dir, replace(manifest, files=files, machine=machine, kernels=KERNELS_FILE))
    log.info("stored compiled kernels: %.0f MB in %s", len(data) / 1e6, path)
    return path


def fetch_prepared(url: str, weights_dir: Path) -> None:
    """Fetch the prepared directory at ``url`` (GAMECRAFT_WEIGHTS_URL) unless ``weights_dir`` holds it
    already; when that fails, say so in one line and leave the rest to the Hugging Face download."""
    try:
        manifest = read_manifest(weights_dir)
        if manifest is not None and not size_mismatches(weights_dir, manifest):
            return
        fetch_directory(url, weights_dir)
    except (FetchError, ValueError) as err:
        log.warning("GAMECRAFT_WEIGHTS_URL: %s; falling back to the Hugging Face download", err)


def restore_stand_ins(weights_dir: Path) -> None:
    """A prepared directory shipped without its ``.pt`` files (the safetensors cache carries them) gets
    sparse stand-ins of their sizes back (no disk blocks), as the manifest lists them."""
    try:
        manifest = read_manifest(weights_dir)
        if manifest is not None and manifest.stand_ins:
            write_stand_ins(weights_dir, manifest)
    except (OSError, ValueError) as err:
        log.warning("prepared directory %s: stand-ins not restored: %s", weights_dir, err)
