"""The main job: start the Cog HTTP server locally (as the built image runs it, without Docker),
make one demo prediction, save its videos under ``outputs/``, open the controller page on
http://127.0.0.1:8080/ and print how to call the server.

    python tools/serve.py [--port 5000] [--ui-port 8080] [--no-demo] [--exit-after-demo] [--out outputs]

With a CUDA GPU and complete weights (``GAMECRAFT_WEIGHTS`` or ``./weights``) it serves the real
model. Otherwise it serves TINY RANDOM WEIGHTS on the CPU and says so loudly: the videos are a
pipeline smoke run, not GameCraft's output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from tools.cog_server import data_uri, save_data_uri, start_cog_server  # noqa: E402

BANNER = """
############################################################################################
#  SERVING TINY RANDOM WEIGHTS ON THE CPU ({reason}).
#  Every video from this server is a PIPELINE SMOKE RUN (noise), NOT GameCraft's output.
#  For real videos: a CUDA GPU and the weights (weights/README.md, or set GAMECRAFT_WEIGHTS).
############################################################################################
"""

CALL_HELP = """
The server is READY at {url}  (Ctrl-C stops it)

  # a prediction, synchronous (outputs come back as data URIs without an upload URL)
  curl -s -X POST {url}/predictions -H 'Content-Type: application/json' -d '{{"input": {{
        "image": "data:image/png;base64,'$(base64 -w0 assets/start.png)'",
        "prompt": "A medieval village street", "actions": "[\\"w\\", \\"w+left_rot\\"]",
        "action_speeds": "[0.4, [0.4, 20]]", "seed": 7}}}}'

  # asynchronous with a webhook, or streamed chunk by chunk (server-sent events)
  curl -s -X POST {url}/predictions -H 'Prefer: respond-async' -H 'Content-Type: application/json' \\
       -d '{{"input": {{...}}, "webhook": "http://127.0.0.1:8000/hook"}}'
  curl -N -X POST {url}/predictions -H 'Accept: text/event-stream' -H 'Content-Type: application/json' \\
       -d '{{"input": {{...}}}}'

  # the input schema
  curl -s {url}/openapi.json
"""


def _choose_weights() -> tuple[str, str | None]:
    """``(GAMECRAFT_WEIGHTS for the server, reason for tiny weights or None)``: the predictor's configuration
    with the CLI's fallback, decided by the same planner the predictor runs."""
    from gamecraft.serving.config import ServingConfig
    from gamecraft.serving.plan import plan_service

    config = ServingConfig.from_env(fallback_to_tiny=True)
    plan = plan_service(config)
    if plan.source == "tiny":
        return "tiny", plan.smoke_reason or "GAMECRAFT_WEIGHTS=tiny"
    return config.weights, None


def _demo(server, out: Path) -> list[Path]:
    image = data_uri(REPO / "assets" / "start.png", "image/png")
    inputs = {
        "image": image,
        "prompt": "A cozy village street in the morning",
        "actions": '["w", "w+left_rot"]',
        "action_speeds": "[0.3, [0.3, 20]]",
        "seed": 7,
        "camera_preview": True,
    }
    print("demo prediction: 2 chunks ...", flush=True)
    status, body = server.predict(inputs, timeout=3600)
    if status != 200 or body.get("status") != "succeeded":
        raise RuntimeError(f"demo prediction failed: {status} {json.dumps(body)[:2000]}")
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    extensions = {"video/mp4": ".mp4", "image/png": ".png", "application/octet-stream": ".safetensors"}
    for index, uri in enumerate(body["output"]):
        mime = uri.split(";", 1)[0].removeprefix("data:")
        path = out / f"demo-{index:02d}{extensions.get(mime, '.bin')}"
        save_data_uri(uri, path)
        saved.append(path)
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 5000)))
    parser.add_argument("--out", type=Path, default=REPO / "outputs")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo prediction")
    parser.add_argument("--exit-after-demo", action="store_true", help="stop the server after the demo")
    parser.add_argument(
        "--ui-port",
        type=int,
        default=int(os.environ.get("UI_PORT", 8080)),
        help="port of the controller page (0: don't start it)",
    )
    args = parser.parse_args()

    subprocess.run([sys.executable, str(REPO / "tools" / "cog_schema.py")], cwd=REPO, check=True)
    weights, tiny_reason = _choose_weights()
    if tiny_reason:
        print(BANNER.format(reason=tiny_reason), flush=True)
    os.environ["PORT"] = str(args.port)
    print(f"starting the Cog server on 127.0.0.1:{args.port} (GAMECRAFT_WEIGHTS={weights}) ...", flush=True)
    start = time.perf_counter()
    server = start_cog_server(
        REPO,
        "predict.py:Predictor",
        {"GAMECRAFT_WEIGHTS": weights, "PORT": str(args.port)},
        startup_timeout_s=1800,
        port=args.port,
    )
    print(f"setup done in {time.perf_counter() - start:.0f}s", flush=True)
    try:
        if not args.no_demo:
            for path in _demo(server, args.out):
                print(f"  saved {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
            if tiny_reason:
                print("  (tiny random weights: these videos are a smoke run, not the model's output)")
        if args.exit_after_demo:
            return 0
        ui = None
        if args.ui_port:
            ui = subprocess.Popen(
                [sys.executable, "-m", "gamecraft.ui", "--backend", server.url, "--port", str(args.ui_port)], cwd=REPO
            )
            print(f"\nThe controller page: http://127.0.0.1:{args.ui_port}/  (keyboard, mouse or gamepad)", flush=True)
        print(CALL_HELP.format(url=server.url), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while server.process.poll() is None:
                time.sleep(1)
        finally:
            if ui is not None:
                ui.terminate()
        return server.process.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
