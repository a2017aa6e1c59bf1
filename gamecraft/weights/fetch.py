"""Fetching a prepared weights directory from the owner's storage: ``GAMECRAFT_WEIGHTS_URL`` (issue 27).

Replicate's own models fetch their weights in ``setup()`` with many parallel ranged requests from a fast
store instead of baking 40 GB into the image. Here: the manifest first (``<url>/gamecraft-manifest.json``),
then every file in ``part_bytes`` ranges over ``threads`` connections (stdlib ``urllib``; the GIL is
released while sockets and disks work). Resumable: each file grows in ``<name>.part`` (ranges are written
at their offsets; finished ranges are listed in ``<name>.part.done``), so an interrupted fetch continues
where it stopped. A file is used only once its size and sha256 match the manifest; a mismatch is fetched
once more from scratch, then refused with one line. Files already present with the manifest's size are kept
(their hash was checked when they were fetched).
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .manifest import MANIFEST_NAME, FileEntry, Manifest, sha256_of, write_manifest, write_stand_ins

log = logging.getLogger(__name__)

PART_BYTES = 64 << 20
THREADS = 16
TIMEOUT_S = 60
RETRIES = 3  # per range: a dropped connection is retried from where the range stopped


class FetchError(RuntimeError):
    """A file could not be fetched intact (one line: which, and why)."""


def fetch_directory(
    url: str,
    target: Path,
    only: Iterable[str] | None = None,
    threads: int = THREADS,
    part_bytes: int = PART_BYTES,
    headers: dict[str, str] | None = None,
) -> Manifest:
    """Fetch the prepared directory at ``url`` into ``target`` (``only``: these files of the manifest);
    returns the manifest, written to ``target`` last (its presence means the directory is complete)."""
    base = url.rstrip("/") + "/"
    headers = dict(headers or {})
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.from_json(_get(base + MANIFEST_NAME, headers).decode())
    wanted = sorted(set(only) & set(manifest.files)) if only is not None else sorted(manifest.files)
    todo = [rel for rel in wanted if not _present(target / rel, manifest.files[rel])]
    total = sum(manifest.files[rel].size for rel in todo)
    log.info("fetching %d of %d files (%.1f GB) from %s", len(todo), len(wanted), total / 1e9, base)
    begin = time.perf_counter()
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for rel in todo:  # one file at a time, its ranges in parallel: finished files are usable early
            _fetch_verified(pool, base, rel, target / rel, manifest.files[rel], part_bytes, headers)
    seconds = time.perf_counter() - begin
    if todo:
        log.info("fetched %.1f GB in %.1fs (%.2f GB/s)", total / 1e9, seconds, total / 1e9 / max(seconds, 1e-9))
    if only is None:
        write_stand_ins(target, manifest)
        write_manifest(target, manifest)
    return manifest


def _present(path: Path, entry: FileEntry) -> bool:
    return path.is_file() and path.stat().st_size == entry.size


def _fetch_verified(pool, base: str, rel: str, path: Path, entry: FileEntry, part_bytes: int, headers) -> None:
    for attempt in (1, 2):
        _fetch_file(pool, base + urllib.request.quote(rel), path, entry.size, part_bytes, headers)
        part = _part(path)
        digest = sha256_of(part)
        if part.stat().st_size == entry.size and digest == entry.sha256:
            os.replace(part, path)
            _done_list(path).unlink(missing_ok=True)
            return
        log.warning("%s: sha256 %s, the manifest says %s (attempt %d)", rel, digest[:12], entry.sha256[:12], attempt)
        part.unlink(missing_ok=True)  # start over: which range is wrong is unknown
        _done_list(path).unlink(missing_ok=True)
    raise FetchError(f"{rel}: fetched twice from {base}, and its sha256 does not match the manifest: refused")


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _done_list(path: Path) -> Path:
    return path.with_name(path.name + ".part.done")


def _fetch_file(pool, url: str, path: Path, size: int, part_bytes: int, headers) -> None:
    """Fill ``<path>.part`` with ``size`` bytes, skipping the ranges a previous run finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part, done_list = _part(path), _done_list(path)
    done = {int(x) for x in done_list.read_text().split()} if done_list.is_file() and part.is_file() else set()
    with open(part, "ab"):
        pass
    os.truncate(part, size)
    ranges = [(start, min(start + part_bytes, size)) for start in range(0, size, part_bytes) if start not in done]
    with open(done_list, "a") as record:
        for start in pool.map(lambda r: _fetch_range(url, part, *r, headers), ranges):
            record.write(f"{start}\n")
            record.flush()


def _fetch_range(url: str, part: Path, start: int, end: int, headers) -> int:
    """Write bytes [start, end) of ``url`` at their offset in ``part``; a dropped connection resumes."""
    position, failures = start, 0
    with open(part, "r+b") as f:
        while position < end:
            request = urllib.request.Request(url, headers={**headers, "Range": f"bytes={position}-{end - 1}"})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    if response.status != 206 and not (position == 0 and end == _length(response)):
                        raise FetchError(f"{url}: the server ignored the Range header (HTTP {response.status})")
                    f.seek(position)
                    while position < end and (block := response.read(min(1 << 20, end - position))):
                        f.write(block)
                        position += len(block)
                    if position < end:
                        raise ConnectionError(f"connection closed at byte {position} of range {start}-{end}")
            except (OSError, urllib.error.URLError, ConnectionError) as err:
                failures += 1
                if failures > RETRIES:
                    raise FetchError(f"{url}: bytes {position}-{end - 1} failed {failures} times: {err}") from None
                log.info("%s: %s; retrying from byte %d", url, err, position)
    return start


def _length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None else None


def _get(url: str, headers) -> bytes:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
            return response.read()
    except (OSError, urllib.error.URLError) as err:
        raise FetchError(f"{url}: {err}") from None
