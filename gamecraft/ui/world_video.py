"""The "whole world" video: the chunk mp4s of one world, joined into one mp4 by the page's server.

The chunks of a world come from several predictions (Generate, then Keep playing, …) as ``data:`` URIs
(a local Cog server) or ``https`` URLs (Replicate). They are written to a temporary folder and joined
with the ffmpeg binary bundled with ``imageio-ffmpeg``:

* chunks with one codec, size, pixel format and frame rate (the normal case: one server, one ``fps``)
  are joined with ffmpeg's concat demuxer and ``-c copy`` — no re-encode, so every frame is the
  server's own bytes, and joining 64 chunks takes well under a second;
* otherwise (e.g. ``fps`` changed between requests) everything is re-encoded once at the first
  chunk's frame rate through :func:`gamecraft.media.video.concat_mp4`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from gamecraft.media.video import concat_mp4
from gamecraft.media.video_reader import probe_video

log = logging.getLogger(__name__)

MAX_CHUNKS = 4096
MAX_CHUNK_BYTES = 256 * 1024 * 1024
FETCH_TIMEOUT_S = 120.0


class WorldVideoError(ValueError):
    """A request the server cannot turn into a video; the message says which chunk and why."""


@dataclass(frozen=True)
class WorldVideo:
    """The joined mp4 (``data``) and how it was made: ``"copy"`` (stream copy) or ``"reencode"``."""

    data: bytes
    method: str


def _chunk_bytes(uri: str, index: int) -> bytes:
    where = f"chunk {index + 1}"
    if not isinstance(uri, str):
        raise WorldVideoError(f"{where}: expected a data: URI or an http(s) URL")
    if uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        if ";base64" not in header:
            raise WorldVideoError(f"{where}: only base64 data: URIs are accepted")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise WorldVideoError(f"{where}: the data: URI is not valid base64") from None
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT_S) as resp:
                data = resp.read(MAX_CHUNK_BYTES + 1)
        except (OSError, urllib.error.URLError) as err:
            raise WorldVideoError(f"{where}: could not download it ({err})") from None
        if len(data) > MAX_CHUNK_BYTES:
            raise WorldVideoError(f"{where}: larger than {MAX_CHUNK_BYTES >> 20} MiB")
        return data
    raise WorldVideoError(f"{where}: expected a data: URI or an http(s) URL")


def join_chunks(uris: list[str]) -> WorldVideo:
    """One mp4 from the chunk videos ``uris`` (in order). Raises :class:`WorldVideoError`."""
    if not isinstance(uris, list) or not uris:
        raise WorldVideoError("chunks: give a non-empty list of chunk videos")
    if len(uris) > MAX_CHUNKS:
        raise WorldVideoError(f"chunks: {len(uris)} given; at most {MAX_CHUNKS}")
    with tempfile.TemporaryDirectory(prefix="gamecraft-world-") as tmp:
        folder = Path(tmp)
        paths = []
        for index, uri in enumerate(uris):
            path = folder / f"chunk{index:05d}.mp4"
            path.write_bytes(_chunk_bytes(uri, index))
            paths.append(path)
        infos = []
        for index, path in enumerate(paths):
            try:
                infos.append(probe_video(path))
            except ValueError:
                raise WorldVideoError(f"chunk {index + 1}: not a readable video") from None
        out = folder / "world.mp4"
        keys = {(i.codec, i.width, i.height, i.pix_fmt, round(i.fps, 3)) for i in infos}
        if len(keys) == 1:
            _stream_copy(paths, out)
            method = "copy"
        else:  # different frame rates or encodings: one re-encode at the first chunk's rate
            log.info("world video: chunks differ (%s); re-encoding", sorted(keys))
            concat_mp4(paths, out, fps=infos[0].fps or 25)
            method = "reencode"
        return WorldVideo(out.read_bytes(), method)


def _stream_copy(paths: list[Path], out: Path) -> None:
    listing = out.with_name("chunks.txt")
    # the concat demuxer's list format: one `file '<path>'` line per input (our own temp names, no quotes)
    listing.write_text("".join(f"file '{p.as_posix()}'\n" for p in paths))
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-nostdin",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        str(listing),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        "-y",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=600)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise WorldVideoError(f"ffmpeg could not join the chunks: {tail[0]}")
