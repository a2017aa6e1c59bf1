"""The manifest of a prepared weights directory: every file's size and sha256, and the machine its compiled
kernels were made for.

``python -m gamecraft.weights prepare DIR`` writes ``DIR/gamecraft-manifest.json``; a fetch
(:mod:`.fetch`) verifies each file against it, and ``setup()`` loads the compiled kernels only when the
``machine`` it records is this one (:mod:`gamecraft.serving.artifacts`). Format (version 1)::

    {"version": 1,
     "files": {"<relative path>": {"size": <bytes>, "sha256": "<hex>"}, ...},
     "stand_ins": {"<relative path>": <bytes>, ...},
     "machine": {"gpu": ..., "capability": ..., "torch": ..., "triton": ..., "cuda": ...},
     "kernels": "<relative path of the compiled-kernel artifacts>" | null}

``stand_ins``: official transformer ``.pt`` files whose weights the safetensors cache carries. The
cache is matched to its ``.pt`` by name and size only (:func:`gamecraft.weights.cache_is_current`), so a
directory that is fetched instead of downloaded holds a sparse file of that size in the ``.pt``'s place
and never moves its 25 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "gamecraft-manifest.json"
FORMAT_VERSION = 1
CHUNK = 8 << 20


class ManifestError(ValueError):
    """A manifest that cannot be read, or a file that does not match it (one line)."""


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """See the module docstring; ``files`` maps relative paths (``/``-separated) to their entries."""

    files: Mapping[str, FileEntry]
    machine: Mapping[str, object] = field(default_factory=dict)
    kernels: str | None = None
    stand_ins: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": FORMAT_VERSION,
                "files": {p: {"size": e.size, "sha256": e.sha256} for p, e in sorted(self.files.items())},
                "stand_ins": dict(sorted(self.stand_ins.items())),
                "machine": dict(self.machine),
                "kernels": self.kernels,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
            if data.get("version") != FORMAT_VERSION:
                raise ManifestError(f"manifest version {data.get('version')!r}, expected {FORMAT_VERSION}")
            files = {p: FileEntry(int(e["size"]), str(e["sha256"])) for p, e in data["files"].items()}
            stand_ins = {p: int(n) for p, n in data.get("stand_ins", {}).items()}
            for path in (*files, *stand_ins):
                _check_relative(path)
            return cls(files, dict(data.get("machine") or {}), data.get("kernels"), stand_ins)
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ManifestError(f"unreadable manifest: {type(err).__name__}: {err}") from None


def _check_relative(path: str) -> None:
    """A manifest path must stay inside its directory (a fetched manifest is not trusted)."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"manifest path {path!r} is not a plain relative path")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def describe_files(directory: Path, paths: Iterable[str], threads: int = 8) -> dict[str, FileEntry]:
    """``{path: FileEntry}`` of ``paths`` under ``directory`` (hashed in ``threads`` threads: hashlib
    releases the GIL, so a fast disk is read at several GB/s)."""
    paths = sorted(set(paths))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        digests = list(pool.map(lambda p: sha256_of(directory / p), paths))
    return {p: FileEntry((directory / p).stat().st_size, d) for p, d in zip(paths, digests, strict=True)}


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of ``directory``, or None when it has none."""
    path = Path(directory) / MANIFEST_NAME
    return Manifest.from_json(path.read_text()) if path.is_file() else None


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write atomically (a reader never sees half a manifest)."""
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_suffix(".json.part")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, path)
    return path


def size_mismatches(directory: Path, manifest: Manifest) -> list[str]:
    """Files of ``manifest`` missing from ``directory`` or of another size (a cheap check for every boot;
    the sha256 is checked when a file is fetched)."""
    wrong = []
    for rel, entry in manifest.files.items():
        path = Path(directory) / rel
        if not path.is_file():
            wrong.append(f"{rel} is missing")
        elif path.stat().st_size != entry.size:
            wrong.append(f"{rel} has {path.stat().st_size} bytes, the manifest says {entry.size}")
    return wrong


def write_stand_ins(directory: Path, manifest: Manifest) -> None:
    """Sparse files of the recorded sizes where the ``.pt`` files the safetensors cache replaces are missing,
    older than the cache (the loader reads the cache only when it is newer than its ``.pt``)."""
    for rel, size in manifest.stand_ins.items():
        path = Path(directory) / rel
        if path.exists():  # the real .pt (or a stand-in already): never overwritten
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
        os.utime(path, ns=(0, 0))
