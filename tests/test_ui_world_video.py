"""The controller page's server joins a world's chunk videos into one file (``POST /api/world-video``): a
stream copy when the chunks agree, a re-encode when their rates differ, and a 422 naming the chunk for what is
not a video."""

from __future__ import annotations

import base64
import json
import urllib.request

import numpy as np

from gamecraft.media.video import write_mp4
from gamecraft.media.video_reader import probe_video, read_video_frames
from gamecraft.ui import CogBackend
from tools.cog_server import request_json


def _chunk_files(tmp_path, count, fps=25):
    """``count`` real chunk mp4s (33 frames each, a different pattern per chunk) and their frames."""
    rng = np.random.default_rng(0)
    files, frames = [], []
    for k in range(count):
        base = rng.integers(0, 255, (1, 32, 48, 3), dtype=np.uint8)
        chunk = np.clip(base.astype(int) + np.arange(33)[:, None, None, None] * 3 + k * 40, 0, 255).astype(np.uint8)
        files.append(write_mp4(chunk, tmp_path / f"c{k}.mp4", fps=fps))
    for f in files:
        frames.append(read_video_frames(f)[0])
    return files, frames


def _post_world(url, files):
    uris = ["data:video/mp4;base64," + base64.b64encode(f.read_bytes()).decode() for f in files]
    body = json.dumps({"chunks": uris, "name": "w/../x.mp4"}).encode()
    req = urllib.request.Request(
        url + "/api/world-video", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read(), dict(resp.headers)


def test_world_video_joins_chunks_without_reencoding(serve, tmp_path):
    url = serve(CogBackend("http://127.0.0.1:9"))
    files, frames = _chunk_files(tmp_path, 3)
    data, headers = _post_world(url, files)
    assert headers["Content-Type"] == "video/mp4" and headers["X-Assembly"] == "copy"
    assert headers["Content-Disposition"] == 'attachment; filename="w-..-x.mp4"'
    out = tmp_path / "world.mp4"
    out.write_bytes(data)
    info = probe_video(out)
    joined, full = read_video_frames(out)
    assert joined.shape[0] == full.frame_count == 3 * 33
    assert abs(info.duration_s - 3 * 33 / 25) < 0.05
    # stream copy: every decoded frame is exactly the chunk's own decoded frame
    assert np.array_equal(joined, np.concatenate(frames))


def test_world_video_reencodes_chunks_of_different_rates(serve, tmp_path):
    url = serve(CogBackend("http://127.0.0.1:9"))
    files, _ = _chunk_files(tmp_path, 1)
    (tmp_path / "b").mkdir()
    more, _ = _chunk_files(tmp_path / "b", 1, fps=12)
    data, headers = _post_world(url, files + more)
    assert headers["X-Assembly"] == "reencode"
    out = tmp_path / "world.mp4"
    out.write_bytes(data)
    frames, info = read_video_frames(out)
    assert frames.shape[0] == info.frame_count == 66 and abs(info.fps - 25) < 0.01


def test_world_video_refuses_what_is_not_a_video(serve):
    url = serve(CogBackend("http://127.0.0.1:9"))
    for body, message in (
        ({"chunks": []}, "non-empty list"),
        ({"chunks": ["file:///etc/passwd"]}, "chunk 1: expected"),
        ({"chunks": ["data:video/mp4;base64,AAAA"]}, "chunk 1: not a readable video"),
        ({"chunks": ["data:video/mp4;base64,@@"]}, "chunk 1: the data: URI is not valid base64"),
    ):
        status, answer = request_json("POST", url + "/api/world-video", body)
        assert status == 422 and message in answer["detail"], answer
