"""One request path (issue 29): the predictor and the CLI turn the same inputs into the same request through
``gamecraft.serving.request.prepare_request``; the CLI honours ``GAMECRAFT_GPUS``, checks the time budget and
warms up exactly the request's pass shapes; predict.py and the CLI repeat no block of code."""

from __future__ import annotations

import gc
import importlib
import inspect
import re
import sys
import weakref
from dataclasses import replace

import pytest
import torch
from cog import Path as CogPath
from conftest import REPO_ROOT

import gamecraft.__main__ as cli
from gamecraft.engine import PassShape
from gamecraft.serving import request as request_module
from gamecraft.serving.build import build_service
from gamecraft.serving.config import ServingConfig
from gamecraft.serving.memory_plan import DEFAULT_COSTS, GIB, plan_memory
from gamecraft.serving.request import RequestInputs, prepare_request
from gamecraft.specs.errors import RequestError

IMAGE = REPO_ROOT / "assets" / "start.png"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    config = ServingConfig(weights="tiny", tiny_size=(32, 48), tiny_dir=tmp_path_factory.mktemp("tiny"))
    built = build_service(config)
    yield built
    built.close()


@pytest.fixture(scope="module")
def predict_module():
    sys.path.insert(0, str(REPO_ROOT))
    module = importlib.import_module("predict")
    yield module
    sys.path.remove(str(REPO_ROOT))


@pytest.fixture
def recorded(service, monkeypatch):
    """Every PreparedRequest made, and every request the service ran, in order; ``build_service`` in the CLI
    hands out the module's service and records the configuration and plan it was asked for."""
    record = {"prepared": [], "ran": [], "built": []}

    def prepare(svc, inputs):
        prepared = prepare_request(svc, inputs)
        record["prepared"].append(prepared)
        return prepared

    def build(config, plan=None, **_):
        record["built"].append((config, plan))
        return replace(service, config=config)

    original = type(service).generate

    def generate(self, request, *args, **kwargs):
        record["ran"].append(request)
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(request_module, "prepare_request", prepare)
    monkeypatch.setattr(cli, "prepare_request", prepare)
    monkeypatch.setattr(cli, "build_service", build)
    monkeypatch.setattr(type(service), "generate", generate)
    monkeypatch.setattr(type(service), "close", lambda self: None)
    return record


def _predict(predict_module, service, tmp_path, monkeypatch, **inputs):
    monkeypatch.setattr(predict_module, "OUTPUT_ROOT", CogPath(tmp_path / "outputs"))
    pred = predict_module.Predictor()
    pred.service, pred._last_output_dir = service, None
    # a direct call passes every input: the API's defaults (Cog's Input() objects hold them), then the test's
    api = {name: p.default.default for name, p in inspect.signature(pred.predict).parameters.items()}
    return list(pred.predict(**{**api, **inputs}))


def test_the_predictor_and_the_cli_make_the_same_request(predict_module, service, recorded, tmp_path, monkeypatch):
    outputs = _predict(
        predict_module,
        service,
        tmp_path,
        monkeypatch,
        image=CogPath(IMAGE),
        prompt="a harbour at dusk",
        actions='["w", "left_rot"]',
        action_speeds="[0.3, 20]",
        num_inference_steps=1,
        guidance_scale=2.0,
        seed=11,
        negative_prompt="blurry",
        fps=24,
        return_last_frame=True,
        camera_preview=True,
    )
    argv = ["generate", "--tiny", "--size", "32x48", "--image", str(IMAGE), "--prompt", "a harbour at dusk"]
    argv += ["--actions", '["w", "left_rot"]', "--speeds", "[0.3, 20]", "--steps", "1", "--guidance", "2"]
    argv += ["--seed", "11", "--negative-prompt", "blurry", "--fps", "24", "--last-frame", "--camera-preview"]
    assert cli.main([*argv, "--out", str(tmp_path / "cli")]) == 0
    from_predict, from_cli = recorded["prepared"]
    assert from_predict.request.preset.guidance_scale == 2.0 and from_predict.request.seed == 11
    assert from_cli == from_predict  # the request, its estimate, the kernels and the log lines
    assert recorded["ran"] == [from_predict.request, from_cli.request]
    assert len(outputs) == 6  # two chunks, the video, the state, the last frame, the camera preview


def test_the_cli_warms_up_the_request_s_own_shapes(recorded, tmp_path):
    """``--preset distilled --guidance 2`` runs two-row passes: the warm-up compiles those, not the preset's
    one-row ones; a request from a state file runs later chunks only."""
    argv = ["generate", "--tiny", "--size", "32x48", "--steps", "1", "--guidance", "2", "--seed", "3"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    (_, plan), *_ = recorded["built"]
    assert plan.warm_shapes == (PassShape(2, 10, False), PassShape(2, 18, False))
    state = next((tmp_path / "a").glob("*-state.safetensors"))
    argv = ["generate", "--tiny", "--size", "32x48", "--steps", "1", "--continue-from", str(state)]
    assert cli.main([*argv, "--actions", '["w"]', "--speeds", "[0.2]", "--out", str(tmp_path / "b")]) == 0
    assert recorded["built"][1][1].warm_shapes == (PassShape(1, 18, False),)


def test_the_cli_honours_gamecraft_gpus(recorded, tmp_path, monkeypatch, capsys):
    argv = ["generate", "--tiny", "--size", "32x48", "--steps", "1", "--actions", '["w"]', "--speeds", "[0.2]"]
    monkeypatch.setenv("GAMECRAFT_GPUS", "2")
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    config, plan = recorded["built"][0]
    assert config.gpus == 2 and plan.world_size == 2
    assert cli.main([*argv, "--gpus", "1", "--out", str(tmp_path / "b")]) == 0  # a flag wins
    assert recorded["built"][1][1].world_size == 1
    monkeypatch.setenv("GAMECRAFT_GPUS", "3")
    with pytest.raises(SystemExit, match="GAMECRAFT_GPUS=3: 3 GPUs cannot split 2 attention heads evenly"):
        cli.main(argv)


def test_the_cli_checks_the_time_budget(recorded, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GAMECRAFT_TIME_BUDGET_S", "0.001")
    argv = ["generate", "--tiny", "--size", "32x48", "--steps", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: 2 chunks at the distilled preset \(1 steps, guidance 1\) need ~\d+ (s|min) on ", err)
    assert "the limit is 1 s: no chunk fits at these settings" in err
    assert recorded["ran"] == []  # refused before any generation


def test_refusals_are_request_errors(service):
    inputs = RequestInputs(prompt="p", actions='["w"]', action_speeds="[0.2]", image=IMAGE)
    short = replace(service, config=replace(service.config, time_budget_s=0.001))
    with pytest.raises(RequestError, match="the limit is 1 s"):
        prepare_request(short, inputs)
    # a GPU whose memory holds one row but not the two of guidance (a hypothetical model's byte costs)
    costs = replace(DEFAULT_COSTS, activations_1x18=30 * GIB, activations_2x18=60 * GIB)
    small = replace(service, plan=replace(service.plan, memory=plan_memory(58 * GIB, 1, True, costs)))
    with pytest.raises(RequestError, match="guidance > 1"):
        prepare_request(small, replace(inputs, guidance_scale=2.0))
    for bad, message in [
        (dict(actions='["jump"]'), "actions[0]: unknown action 'jump'"),
        (dict(video=IMAGE), "give exactly one of image, video or continue_from (got image, video)"),
        (dict(num_inference_steps=0), "num_inference_steps must be between 1 and"),
        (dict(preset="turbo"), "unknown preset 'turbo'"),
    ]:
        with pytest.raises(RequestError, match=re.escape(message)):
            prepare_request(service, replace(inputs, **bad))


def _code_lines(path) -> list[str]:
    """The lines that count as code (no blanks, comments, imports or lone brackets), whitespace folded."""
    lines = []
    for line in path.read_text().splitlines():
        text = " ".join(line.split())
        if text and not text.startswith(("#", "import ", "from ")) and text.strip("()[]{}:,") != "":
            lines.append(text)
    return lines


def test_predict_and_the_cli_repeat_no_block_of_five_lines():
    predict, main = _code_lines(REPO_ROOT / "predict.py"), _code_lines(REPO_ROOT / "gamecraft" / "__main__.py")
    windows = {tuple(predict[i : i + 5]) for i in range(len(predict) - 4)}
    repeated = [main[i : i + 5] for i in range(len(main) - 4) if tuple(main[i : i + 5]) in windows]
    assert repeated == []


# -- errors (issue 28, item 3) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["unknown action", "unreadable image", "over the time budget"])
def test_a_request_error_fails_in_one_line_without_a_traceback(
    case, predict_module, service, tmp_path, monkeypatch, capsys, caplog
):
    inputs, message = dict(image=CogPath(IMAGE)), None
    if case == "unknown action":
        inputs.update(actions='["jump"]', action_speeds="[1]")
        message = "actions[0]: unknown action 'jump'; expected one of"
    elif case == "unreadable image":
        (tmp_path / "bad.png").write_bytes(b"not an image")
        inputs.update(image=CogPath(tmp_path / "bad.png"))
        message = "not a readable image: "
    else:
        service = replace(service, config=replace(service.config, time_budget_s=0.001))
        message = "4 chunks at the distilled preset (8 steps, guidance 1) need ~"
    with pytest.raises(RequestError) as info:
        _predict(predict_module, service, tmp_path, monkeypatch, **inputs)
    assert str(info.value).startswith(message)
    assert info.value.__cause__ is None and info.value.__context__ is None and type(info.value) is RequestError
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert not any(record.exc_info for record in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == [str(info.value)]
    assert [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()] == []


def _failing_forward(monkeypatch, service, error: BaseException, keep: list | None = None):
    """The transformer's third pass raises ``error``; with ``keep``, the failing frame holds a 64 MB tensor
    (its weakref goes in ``keep``), as a failed forward holds its activations."""
    model = service.engine.transformer("distilled")
    original, calls = type(model).forward, []

    def forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            activations = torch.ones(16 * 2**20)
            if keep is not None:
                keep.append(weakref.ref(activations))
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", forward)


def test_out_of_memory_is_recognised_by_type(predict_module, service, tmp_path, monkeypatch, caplog):
    """An error that only says "out of memory" is not taken for one (its own message and traceback stay)."""
    _failing_forward(monkeypatch, service, RuntimeError("CUDA error: out of memory (reported by a library)"))
    with pytest.raises(RuntimeError, match=r"^CUDA error: out of memory \(reported by a library\)$"):
        _predict(predict_module, service, tmp_path, monkeypatch, image=CogPath(IMAGE), num_inference_steps=2)
    assert any("Traceback" in r.getMessage() and "reported by a library" in r.getMessage() for r in caplog.records)


def test_out_of_memory_on_an_unhealthy_engine_says_restart(predict_module, service, tmp_path, monkeypatch):
    """Several GPUs: when the pass's failure left the engine unhealthy, the message does not promise a ready
    model."""
    failed: list = []  # the failing pass adds to it: the engine is unhealthy from then on (not before the request)
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    _failing_forward(monkeypatch, service, oom, failed)
    monkeypatch.setattr(type(service.engine), "healthy", property(lambda self: not failed))
    with pytest.raises(RuntimeError, match=r"^out of GPU memory during this prediction; the model must be restarted$"):
        _predict(predict_module, service, tmp_path, monkeypatch, image=CogPath(IMAGE), num_inference_steps=2)


def test_memory_is_released_once_the_failed_frames_are_gone(predict_module, service, tmp_path, monkeypatch):
    """What the failed forward held is garbage by the time the predictor releases memory (on a GPU, what
    ``torch.cuda.empty_cache`` can hand back), not kept alive by the exception being handled."""
    kept, freed_at_release = [], []
    _failing_forward(monkeypatch, service, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), kept)

    def free_memory():
        gc.collect()
        freed_at_release.append(kept[0]() is None)

    monkeypatch.setattr(predict_module, "_free_memory", free_memory)
    with pytest.raises(RuntimeError, match=r"^out of GPU memory during this prediction; memory was released"):
        _predict(predict_module, service, tmp_path, monkeypatch, image=CogPath(IMAGE), num_inference_steps=2)
    assert freed_at_release == [True]


def test_a_setup_error_keeps_its_cause_in_the_log(predict_module, monkeypatch, caplog):
    def build_service(config):
        try:
            raise KeyError("model.blocks.0.weight")
        except KeyError as err:
            raise ValueError("the transformer checkpoint does not match the model") from err

    monkeypatch.setattr("gamecraft.serving.build.build_service", build_service)
    with pytest.raises(RuntimeError, match=r"^the transformer checkpoint does not match the model$") as info:
        predict_module.Predictor().setup()
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one line for SETUP_FAILED
    [record] = [r for r in caplog.records if r.exc_info]
    assert "KeyError: 'model.blocks.0.weight'" in caplog.text and record.exc_info[0] is ValueError
