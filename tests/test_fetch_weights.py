"""GAMECRAFT_WEIGHTS_URL (issue 27): a prepared directory fetched from a local HTTP server that answers
Range requests, in parallel ranges, resumable, verified against the manifest; and the driver check that
runs before any byte is downloaded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

import gamecraft.serving.artifacts as artifacts
import gamecraft.serving.build as build
import gamecraft.serving.devices as driver
from gamecraft.serving.config import ServingConfig
from gamecraft.serving.plan import plan_service
from gamecraft.testing.http_range import running_server
from gamecraft.weights.fetch import FetchError, fetch_directory
from gamecraft.weights.manifest import FileEntry, Manifest, write_manifest

PART = 64 * 1024
FILES = {"gamecraft_models/a.safetensors": 300_001, "stdmodels/b.json": 1_000, "c/d.bin": 2 * PART}


@pytest.fixture()
def source(tmp_path) -> Path:
    """A prepared directory: random files, their manifest (sha256 computed here with hashlib), a stand-in."""
    root = tmp_path / "source"
    entries = {}
    for i, (rel, size) in enumerate(FILES.items()):
        data = os.urandom(size) if i else bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        entries[rel] = FileEntry(size, hashlib.sha256(data).hexdigest())
    write_manifest(root, Manifest(entries, {"gpu": "test"}, None, {"gamecraft_models/a.pt": 12345}))
    return root


def _same(source: Path, target: Path) -> bool:
    return all((source / rel).read_bytes() == (target / rel).read_bytes() for rel in FILES)


def test_fetches_every_file_in_ranges_and_writes_the_manifest_last(source, tmp_path):
    target = tmp_path / "target"
    with running_server(source) as server:
        fetch_directory(server.url, target, threads=4, part_bytes=PART)
    assert _same(source, target)
    assert (target / "gamecraft-manifest.json").read_text() == (source / "gamecraft-manifest.json").read_text()
    assert (target / "gamecraft_models/a.pt").stat().st_size == 12345  # the stand-in
    ranges = [r for path, r in server.requests if path == "gamecraft_models/a.safetensors"]
    assert len(ranges) == 5 and "bytes=262144-300000" in ranges  # ceil(300001 / 64 KiB) ranged requests
    assert not list(target.rglob("*.part*"))


def test_a_dropped_connection_resumes_the_range_where_it_stopped(source, tmp_path):
    with running_server(source) as server:
        server.drop_after["gamecraft_models/a.safetensors"] = 10_000
        fetch_directory(server.url, tmp_path / "target", threads=1, part_bytes=PART)
    assert _same(source, tmp_path / "target")
    ranges = [r for path, r in server.requests if path == "gamecraft_models/a.safetensors"]
    assert "bytes=10000-65535" in ranges  # the dropped range went on from byte 10000


def test_a_wrong_hash_is_fetched_again_once(source, tmp_path):
    with running_server(source) as server:
        server.corrupt["stdmodels/b.json"] = 1
        fetch_directory(server.url, tmp_path / "target", part_bytes=PART)
    assert _same(source, tmp_path / "target")
    assert sum(path == "stdmodels/b.json" for path, _ in server.requests) == 2


def test_a_file_wrong_twice_is_refused_in_one_line(source, tmp_path):
    target = tmp_path / "target"
    with running_server(source) as server:
        server.corrupt["stdmodels/b.json"] = 2
        with pytest.raises(FetchError) as err:
            fetch_directory(server.url, target, part_bytes=PART)
    assert "stdmodels/b.json" in str(err.value) and "refused" in str(err.value) and "\n" not in str(err.value)
    assert not (target / "stdmodels/b.json").exists() and not (target / "gamecraft-manifest.json").exists()


def test_an_interrupted_fetch_resumes_without_refetching_finished_ranges(source, tmp_path):
    target = tmp_path / "target"
    rel = "c/d.bin"
    part = target / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes((source / rel).read_bytes()[:PART])  # the first range arrived before the interruption
    (target / (rel + ".part.done")).write_text("0\n")
    with running_server(source) as server:
        fetch_directory(server.url, target, part_bytes=PART)
    assert _same(source, target)
    assert [r for path, r in server.requests if path == rel] == [f"bytes={PART}-{2 * PART - 1}"]


def test_an_old_driver_fails_setup_in_one_line_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "read_driver_version", lambda: "570.86.15")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(build, "download_weights", lambda *a, **k: pytest.fail("downloaded"))
    monkeypatch.setattr(artifacts, "fetch_directory", lambda *a, **k: pytest.fail("fetched"))
    config = ServingConfig(weights=str(tmp_path / "weights"), weights_url="http://127.0.0.1:9/")
    with pytest.raises(RuntimeError) as err:
        build.build_service(config)
    message = str(err.value)
    assert "570.86.15" in message and "580" in message and "CUDA 13.0" in message and "\n" not in message


def test_driver_versions_against_cuda():
    assert driver.driver_problem("580.65.06", "13.0") is None
    assert driver.driver_problem("575.51", "13.0") is not None
    assert driver.driver_problem("550.54", "12.8") is None
    assert driver.driver_problem("", "13.0") is None  # no driver: the GPU probe reports it


def test_setup_fetches_a_prepared_directory_before_checking_the_layout(tmp_path, caplog):
    from gamecraft.testing.tiny_weights import write_tiny_weights
    from gamecraft.weights import check_layout
    from gamecraft.weights.manifest import describe_files

    source = write_tiny_weights(tmp_path / "source")
    files = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    write_manifest(source, Manifest(describe_files(source, files, threads=2)))
    target = tmp_path / "weights"
    with running_server(source) as server:
        config = ServingConfig(weights=str(target), weights_url=server.url, download=False)
        build.prepare_weights(config, plan_service(config, device=None))
    check_layout(target, "distilled")
    check_layout(target, "full")
    assert (target / "gamecraft-manifest.json").is_file()

    with running_server(tmp_path / "nothing-here") as server:  # no manifest there: 404
        config = ServingConfig(weights=str(tmp_path / "other"), weights_url=server.url, download=False)
        with pytest.raises(RuntimeError, match="downloading is disabled"):
            build.prepare_weights(config, plan_service(config, device=None))
    assert "GAMECRAFT_WEIGHTS_URL" in caplog.text and "falling back to the Hugging Face download" in caplog.text


def test_setup_restores_the_stand_ins_of_a_directory_shipped_without_its_pt_files(tmp_path):
    weights = tmp_path / "weights"
    (weights / "gamecraft_models").mkdir(parents=True)
    (weights / "gamecraft_models/real.pt").write_bytes(b"official")
    stand_ins = {"gamecraft_models/missing.pt": 25 * 10**9, "gamecraft_models/real.pt": 999}
    write_manifest(weights, Manifest({}, stand_ins=stand_ins))
    artifacts.restore_stand_ins(weights)
    missing = (weights / "gamecraft_models/missing.pt").stat()
    assert missing.st_size == 25 * 10**9 and missing.st_blocks * 512 < 10**6  # sparse: no 25 GB on disk
    assert (weights / "gamecraft_models/real.pt").read_bytes() == b"official"  # never overwritten
