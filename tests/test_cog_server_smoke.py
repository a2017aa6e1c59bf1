"""tools/cog_schema.py against a fixture predictor, then the real coglet server using it.

The fixture predictor has the input kinds the GameCraft predictor uses (Path, Optional[Path],
str, bounded int/float, bool, choices, Optional[int] seed, Secret) and an Iterator[Path]
output. The server tests run coglet without Docker (see tests/cog_server.py).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from tools.cog_server import start_cog_server

TOOL = REPO_ROOT / "tools" / "cog_schema.py"
IMAGE_URI = "data:image/png;base64," + base64.b64encode(b"hello").decode()

FIXTURE_PREDICTOR = """
import tempfile
from typing import Iterator, Optional

from cog import BasePredictor, Input, Path, Secret


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.tag = "setup-ran"

    def predict(
        self,
        image: Path = Input(description="Start image", accept="image/*"),
        video: Optional[Path] = Input(description="Optional start video", default=None),
        prompt: str = Input(description="Scene description", default="a castle"),
        steps: int = Input(description="Chunks to generate", default=2, ge=1, le=5),
        guidance: float = Input(description="Guidance scale", default=1.5, ge=1.0, le=10.0),
        preview: bool = Input(description="Also write a preview", default=False),
        mode: str = Input(description="Speed preset", default="fast", choices=["fast", "slow"]),
        seed: Optional[int] = Input(description="Random seed; blank for random", default=None),
        api_key: Secret = Input(description="Optional key", default=None),
        token: Secret = Input(description="Required token"),
        fail_with: str = Input(description="Raise ValueError with this text", default=""),
    ) -> Iterator[Path]:
        if fail_with:
            raise ValueError(fail_with)
        out = Path(tempfile.mkdtemp())
        for i in range(steps):
            path = out / f"chunk-{i}.txt"
            text = f"{self.tag}|{image.read_bytes().decode()}|{prompt}|{mode}|{seed}|{i}"
            path.write_text(text)
            yield path
"""

STREAMING_RUNNER = """
from typing import Iterator

import cog as c
from cog import BaseRunner, Input
from cog import streaming as stream


class Runner(BaseRunner):
    @stream
    def run(self, n: int = Input(default=2)) -> c.ConcatenateIterator[str]:
        yield from ("a",) * n


class Plain(BaseRunner):
    def run(self, n: int = 2) -> Iterator[str]:
        yield "x"


class Dotted(BaseRunner):
    @c.streaming()
    def run(self, n: int = 2) -> Iterator[str]:
        yield "x"
"""


def _load_tool():
    spec = importlib.util.spec_from_file_location("cog_schema_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cog_fixture")
    (root / "predict.py").write_text(textwrap.dedent(FIXTURE_PREDICTOR))
    result = _run_tool("--root", str(root), "--ref", "predict.py:Predictor")
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def schema(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / ".cog" / "openapi_schema.json").read_text())


# ----------------------------------------------------------------------------- schema


def test_required_inputs_and_order(schema: dict) -> None:
    inputs = schema["components"]["schemas"]["Input"]
    # Optional[...] with default None, and Secret with an explicit default=None, are optional.
    assert inputs["required"] == ["image", "token"]
    order = sorted(inputs["properties"], key=lambda k: inputs["properties"][k]["x-order"])
    assert order == [
        "image", "video", "prompt", "steps", "guidance", "preview",
        "mode", "seed", "api_key", "token", "fail_with",
    ]  # fmt: skip


def test_input_types_bounds_and_defaults(schema: dict) -> None:
    props = schema["components"]["schemas"]["Input"]["properties"]
    assert props["image"] == {
        "title": "Image", "type": "string", "format": "uri", "description": "Start image",
        "x-cog-accept": "image/*", "x-order": 0,
    }  # fmt: skip
    assert props["video"]["format"] == "uri" and props["video"]["nullable"] is True
    assert (props["steps"]["type"], props["steps"]["minimum"], props["steps"]["maximum"]) == (
        "integer", 1, 5,
    )  # fmt: skip
    assert props["steps"]["default"] == 2
    assert (props["guidance"]["type"], props["guidance"]["default"]) == ("number", 1.5)
    assert (props["preview"]["type"], props["preview"]["default"]) == ("boolean", False)
    assert props["prompt"]["default"] == "a castle"
    assert props["seed"] == {
        "title": "Seed", "type": "integer", "nullable": True, "default": None,
        "description": "Random seed; blank for random", "x-order": 7,
    }  # fmt: skip
    assert props["api_key"]["x-cog-secret"] is True and props["api_key"]["nullable"] is True
    assert props["token"]["format"] == "password" and "default" not in props["token"]


def test_choices_become_an_enum_component(schema: dict) -> None:
    components = schema["components"]["schemas"]
    mode = components["Input"]["properties"]["mode"]
    assert mode["allOf"] == [{"$ref": "#/components/schemas/mode"}]
    assert "title" not in mode and mode["default"] == "fast"
    assert components["mode"] == {
        "title": "mode", "description": "An enumeration.", "enum": ["fast", "slow"],
        "type": "string",
    }  # fmt: skip


def test_iterator_path_output(schema: dict) -> None:
    assert schema["components"]["schemas"]["Output"] == {
        "title": "Output",
        "type": "array",
        "items": {"type": "string", "format": "uri"},
        "x-cog-array-type": "iterator",
    }
    post = schema["paths"]["/predictions"]["post"]
    assert "x-cog-streaming" not in post
    assert set(schema["paths"]) == {
        "/", "/health-check", "/predictions", "/predictions/{prediction_id}/cancel",
    }  # fmt: skip


def test_streaming_decorator_sets_the_flag(tmp_path: Path) -> None:
    tool = _load_tool()
    (tmp_path / "runner.py").write_text(textwrap.dedent(STREAMING_RUNNER))
    streaming = tool.build_schema(tmp_path, "runner.py:Runner")
    assert streaming["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert streaming["components"]["schemas"]["Output"]["x-cog-array-display"] == "concatenate"
    # A raw default (n: int = 2) counts as a default, as in Input(default=2).
    assert "required" not in streaming["components"]["schemas"]["Input"]
    dotted = tool.build_schema(tmp_path, "runner.py:Dotted")
    assert dotted["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    plain = tool.build_schema(tmp_path, "runner.py:Plain")
    assert "x-cog-streaming" not in plain["paths"]["/predictions"]["post"]


def test_none_default_on_plain_int_stays_required(tmp_path: Path) -> None:
    # Go's rule (cog.md §0.6): `seed: int = Input(default=None)` is required, not optional.
    (tmp_path / "p.py").write_text(
        "from cog import BaseRunner, Input\n"
        "class R(BaseRunner):\n"
        "    def run(self, seed: int = Input(default=None), n: int = Input()) -> str:\n"
        "        return ''\n"
    )
    inputs = _load_tool().build_schema(tmp_path, "p.py:R")["components"]["schemas"]["Input"]
    assert inputs["required"] == ["seed", "n"]
    assert "default" not in inputs["properties"]["seed"]


def test_output_is_deterministic_and_check_mode(fixture_dir: Path) -> None:
    path = fixture_dir / ".cog" / "openapi_schema.json"
    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "components"')
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    args = ("--root", str(fixture_dir), "--ref", "predict.py:Predictor", "--check")
    assert _run_tool(*args).returncode == 0
    path.write_text(text.replace('"maximum": 5', '"maximum": 6'))
    try:
        stale = _run_tool(*args)
        assert stale.returncode == 1
        assert "is stale: 2 lines differ" in stale.stderr and '"maximum": 6' in stale.stderr
    finally:
        path.write_text(text)
    assert _run_tool(*args).returncode == 0


def test_cli_reports_a_missing_predictor(tmp_path: Path) -> None:
    result = _run_tool("--root", str(tmp_path), "--ref", "nope.py:Predictor")
    assert result.returncode == 2
    assert "predictor file not found" in result.stderr


# ----------------------------------------------------------------------------- coglet


@pytest.fixture(scope="module")
def server(fixture_dir: Path):
    handle = start_cog_server(fixture_dir, "predict.py:Predictor")
    yield handle
    handle.stop()


def test_valid_prediction_returns_data_uris(server) -> None:
    status, body = server.predict({"image": IMAGE_URI, "token": "t", "steps": 2, "mode": "slow"})
    assert status == 200 and body["status"] == "succeeded", body
    assert len(body["output"]) == 2
    prefix = "data:text/plain;base64,"
    assert all(item.startswith(prefix) for item in body["output"])
    texts = [base64.b64decode(item[len(prefix) :]).decode() for item in body["output"]]
    assert texts == ["setup-ran|hello|a castle|slow|None|0", "setup-ran|hello|a castle|slow|None|1"]


@pytest.mark.parametrize(
    ("inputs", "field", "message"),
    [
        ({"steps": 9}, "steps", "9 is greater than the maximum of 5"),
        ({"mode": "bogus"}, "mode", '"bogus" is not one of ["fast","slow"]'),
        ({"token": None}, "token", "null is not of type"),
        # coglet's validator ignores OpenAPI's `nullable`: optional inputs must be omitted.
        ({"seed": None}, "seed", 'null is not of type "integer"'),
    ],
)
def test_invalid_inputs_are_rejected_with_422(server, inputs, field, message) -> None:
    status, body = server.predict({"image": IMAGE_URI, "token": "t", **inputs})
    assert status == 422, body
    [error] = body["detail"]
    assert error["loc"] == ["body", "input", field]
    assert message in error["msg"]


def test_missing_required_input_is_422(server) -> None:
    status, body = server.predict({"token": "t"})
    assert status == 422
    assert body["detail"] == [
        {"loc": ["body", "input", "image"], "msg": "Field required", "type": "value_error.missing"}
    ]


def test_value_error_fails_the_prediction_and_server_recovers(server) -> None:
    status, body = server.predict({"image": IMAGE_URI, "token": "t", "fail_with": "bad action 'q'"})
    assert status == 200
    assert body["status"] == "failed"
    assert body["error"].endswith("ValueError: bad action 'q'")
    assert server.wait_until_ready(timeout_s=10) == "READY"
    status, body = server.predict({"image": IMAGE_URI, "token": "t", "steps": 1})
    assert (status, body["status"]) == (200, "succeeded")


def test_setup_failure_fails_fast_with_the_setup_log(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text(
        "from cog import BasePredictor\n"
        "class Predictor(BasePredictor):\n"
        "    def setup(self) -> None:\n"
        "        raise RuntimeError('weights missing on purpose')\n"
        "    def predict(self, n: int = 1) -> str:\n"
        "        return 'unreachable'\n"
    )
    with pytest.raises(RuntimeError) as err:
        start_cog_server(tmp_path, "predict.py:Predictor", startup_timeout_s=30)
    assert "cog server setup failed (SETUP_FAILED)" in str(err.value)
    assert "RuntimeError: weights missing on purpose" in str(err.value)
