"""One prediction through the running Cog server on a GPU, with full-size random weights.

Starts coglet exactly as the built image does (``python -m cog.server.http``) with
``GAMECRAFT_WEIGHTS=random``, waits for READY, sends one synchronous prediction (image start, two
chunks, distilled preset by default), checks the returned videos, and writes the server log, the
per-chunk timing lines and a JSON summary to ``--out``.

    python benchmarks/server_prediction.py --out $OUT [--preset distilled] [--actions '["w","left_rot"]']
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from tools.cog_server import data_uri, save_data_uri, start_cog_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="distilled")
    parser.add_argument("--actions", default='["w", "left_rot"]')
    parser.add_argument("--speeds", default="[0.3, 20]")
    parser.add_argument("--setup-timeout", type=float, default=480)
    parser.add_argument("--weights", default="random", help="GAMECRAFT_WEIGHTS for the server (tiny: CPU check)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    image = data_uri(REPO / "assets" / "start.png", "image/png")
    started = time.perf_counter()
    server = start_cog_server(
        REPO, "predict.py:Predictor", {"GAMECRAFT_WEIGHTS": args.weights}, startup_timeout_s=args.setup_timeout
    )
    setup_s = time.perf_counter() - started
    try:
        health = server.health()
        begin = time.perf_counter()
        status, body = server.predict(
            {
                "image": image,
                "prompt": "a village street",
                "actions": args.actions,
                "action_speeds": args.speeds,
                "preset": args.preset,
                "seed": 1,
            },
            timeout=1500,
        )
        predict_s = time.perf_counter() - begin
    finally:
        logs = server.logs(tail_chars=2_000_000)
        server.stop()
    (args.out / "server.log").write_text(logs)
    outputs = body.get("output") or [] if isinstance(body, dict) else []
    frames = []
    for index, uri in enumerate(outputs):
        if uri.startswith("data:video/mp4"):
            path = Path(tempfile.mkdtemp()) / f"out{index}.mp4"
            save_data_uri(uri, path)
            from gamecraft.media.video import probe_video, read_video_frames

            try:
                info = probe_video(path)
                frames.append([len(read_video_frames(path)[0]), info.width, info.height, info.codec])
            except (OSError, ValueError) as err:  # the prediction's outcome stands; record why the check failed
                frames.append(f"output {index} ({path.stat().st_size} bytes) not checked: {err}")
    timing = [
        line
        for line in logs.splitlines()
        if re.search(r"chunk \d+ step|chunk \d+ .*done|measured:|setup done|encoded prompt|generated|engine", line)
    ]
    summary = {
        "http_status": status,
        "status": body.get("status") if isinstance(body, dict) else None,
        "error": body.get("error") if isinstance(body, dict) else str(body)[:2000],
        "metrics": body.get("metrics") if isinstance(body, dict) else None,
        "setup_s_including_server_start": round(setup_s, 1),
        "predict_wall_s": round(predict_s, 1),
        "videos_frames_width_height_codec": frames,
        "setup_logs_tail": health.get("setup", {}).get("logs", "")[-3000:],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "timing.txt").write_text("\n".join(timing) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "setup_logs_tail"}, indent=2))
    print("\n".join(timing[-40:]))
    return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
