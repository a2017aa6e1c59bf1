"""The newcomer commands: the CLI generate (tiny smoke run) and tools/serve.py (server + demo prediction)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from gamecraft.__main__ import main
from gamecraft.media.video import read_video_frames
from gamecraft.pipeline.state import load_state
from tools.cog_server import free_port


def test_cli_generate_tiny_writes_videos_and_says_so(tmp_path, capsys):
    code = main(
        [
            "generate",
            "--tiny",
            "--tiny-dir",
            str(tmp_path / "w"),
            "--size",
            "32x48",
            "--seed",
            "5",
            "--steps",
            "2",
            "--actions",
            '["w", "look_left"]',
            "--speeds",
            "[0.3, 20]",
            "--out",
            str(tmp_path / "out"),
            "--last-frame",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "PIPELINE SMOKE RUN" in captured.err and "not the model's output" in captured.err
    videos = sorted((tmp_path / "out").glob("*-video.mp4"))
    assert len(videos) == 1 and read_video_frames(videos[0])[0].shape == (66, 32, 48, 3)
    state = load_state(next((tmp_path / "out").glob("*-state.safetensors")))
    assert state.seed == 5 and state.chunks_done == 2
    assert "seed 5; 2 chunk(s)" in captured.out


def test_cli_generate_on_two_ranks_matches_one(tmp_path, capsys):
    """``--gpus 2`` (gloo processes on the CPU here) gives the same world as one process."""
    states = []
    for gpus in ("1", "2"):
        out = tmp_path / f"out{gpus}"
        assert (
            main(
                [
                    "generate",
                    "--tiny",
                    "--tiny-dir",
                    str(tmp_path / "w"),
                    "--size",
                    "32x48",
                    "--seed",
                    "7",
                    "--steps",
                    "2",
                    "--actions",
                    '["w", "d"]',
                    "--speeds",
                    "[0.3, 0.3]",
                    "--gpus",
                    gpus,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        states.append(load_state(next(out.glob("*-state.safetensors"))))
    assert states[0].chunks_done == states[1].chunks_done == 2
    assert (states[0].last_latents - states[1].last_latents).abs().max() <= 1e-5
    with pytest.raises(SystemExit, match="--gpus 3: 3 GPUs cannot split 2 attention heads evenly"):
        main(["generate", "--tiny", "--tiny-dir", str(tmp_path / "w"), "--size", "32x48", "--gpus", "3"])


def test_cli_reports_bad_actions(capsys):
    assert main(["generate", "--tiny", "--actions", '["jump"]', "--speeds", "[1]"]) == 2
    assert "actions[0]: unknown action 'jump'" in capsys.readouterr().err


def test_serve_starts_the_server_and_saves_the_demo(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": "", "GAMECRAFT_TINY_SIZE": "32x48"}
    proc = subprocess.run(
        [
            sys.executable,
            "tools/serve.py",
            "--port",
            str(free_port()),
            "--exit-after-demo",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SERVING TINY RANDOM WEIGHTS ON THE CPU (no CUDA GPU)" in proc.stdout
    assert read_video_frames(tmp_path / "out" / "demo-02.mp4")[0].shape == (66, 32, 48, 3)
