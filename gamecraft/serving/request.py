"""The one request path: the API's inputs → a validated :class:`GenerationRequest`, its time estimate and the
lines to log, for the Cog predictor and the CLI alike (:func:`prepare_request`).

Every choice a request's inputs leave to the server is made here: whether go_fast runs on this GPU (and
with which attention kernel), the preset with its overrides, the memory plan's refusal of what this GPU
cannot hold, the actions or the camera path, and the time budget. Whatever the user can fix is refused
with a :class:`~gamecraft.specs.errors.RequestError` naming the input, before any GPU work.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gamecraft.engine import PassShape
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.presets import resolve_preset
from gamecraft.pipeline.trajectory import load_trajectory
from gamecraft.specs.errors import RequestError

from .budget import check_budget, request_shapes
from .generate import GenerationRequest

if TYPE_CHECKING:
    from .build import Service
    from .plan import ServicePlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestInputs:
    """The inputs of one request as the API names them (plain values: no Cog types). ``fps``: frames per
    second of the written videos; exactly one of ``image``/``video``/``continue_from``; ``trajectory`` (a
    camera-path file) replaces ``actions``/``action_speeds`` (JSON lists)."""

    prompt: str
    actions: str
    action_speeds: str
    preset: str = "distilled"
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    go_fast: bool = False
    seed: int | None = None
    negative_prompt: str = ""
    fps: float = 25.0
    image: Path | None = None
    video: Path | None = None
    continue_from: Path | None = None
    trajectory: Path | None = None
    return_state: bool = True
    return_last_frame: bool = False
    camera_preview: bool = False


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready to run. ``estimate_s``: seconds it should take here (within the time budget);
    ``go_fast``: whether the fp8 transformer runs (asked for and available on this GPU); ``attention``: the
    attention kernel its passes run; ``notes``: ``(logging level, line)`` pairs for the request's log."""

    request: GenerationRequest
    estimate_s: float
    go_fast: bool
    attention: str
    notes: tuple[tuple[int, str], ...]

    def log(self, logger: logging.Logger = log) -> None:
        for level, line in self.notes:
            logger.log(level, "%s", line)


def prepare_request(service: Service, inputs: RequestInputs) -> PreparedRequest:
    """Validate ``inputs`` for ``service`` and estimate their time; ``RequestError`` (one line naming the
    input) for anything the user can fix, the time budget's and the memory plan's refusals included."""
    request, go_fast, notes = _resolve(service.plan, inputs)
    chunks = len(request.chunks())
    estimate = check_budget(
        service.costs,
        request.preset,
        chunks,
        starts_fresh=request.starts_fresh,
        budget_s=service.config.time_budget_s,
        device_name=service.plan.device_name,
    )
    engine = service.engine
    attention = engine.go_fast_attention_backend if go_fast else engine.attention_backend
    kernels = f" (go_fast: fp8 linears, {attention} attention)" if go_fast else ""
    line = f"request: {chunks} chunk(s), preset {request.preset.name}{kernels}, estimated {estimate:.0f}s"
    return PreparedRequest(request, estimate, go_fast, attention, (*notes, (logging.INFO, line)))


def warm_up_for(plan: ServicePlan, inputs: RequestInputs) -> tuple[PassShape, ...]:
    """The pass shapes a request with ``inputs`` runs under ``plan`` (its rows, go_fast and latent frames):
    what a one-request entry point (the CLI) warms up, so the request itself compiles nothing. Validates
    the inputs as :func:`prepare_request` does (before any model is loaded)."""
    request, _, _ = _resolve(plan, inputs)
    shapes = request_shapes(
        request.preset, len(request.chunks()), request.starts_fresh, rows_at_once=plan.engine_config.rows_at_once
    )
    return tuple(shapes)


def _resolve(plan: ServicePlan, inputs: RequestInputs) -> tuple[GenerationRequest, bool, list[tuple[int, str]]]:
    """The request, whether go_fast runs, and the go_fast notes (why it does not, or which attention)."""
    go_fast = inputs.go_fast and plan.go_fast_note is None
    notes = []
    if inputs.go_fast and not go_fast:
        notes.append((logging.WARNING, plan.go_fast_note))
    elif go_fast and plan.go_fast_attention_note:
        notes.append((logging.INFO, plan.go_fast_attention_note))
    preset = resolve_preset(inputs.preset, inputs.num_inference_steps, inputs.guidance_scale, go_fast=go_fast)
    try:  # what this GPU's memory cannot run is refused before any GPU work
        plan.check_request(preset)
    except ValueError as err:
        raise RequestError(str(err)) from None
    trajectory = load_trajectory(inputs.trajectory) if inputs.trajectory is not None else None
    segments = () if trajectory is not None else parse_actions(inputs.actions, inputs.action_speeds)
    request = GenerationRequest(
        prompt=inputs.prompt,
        preset=preset,
        segments=segments,
        trajectory=trajectory,
        image=inputs.image,
        video=inputs.video,
        continue_from=inputs.continue_from,
        seed=inputs.seed,
        negative_prompt=inputs.negative_prompt,
        size=plan.size,
        fps=float(inputs.fps),
        return_state=inputs.return_state,
        last_frame=inputs.return_last_frame,
        camera_preview=inputs.camera_preview,
    )
    return request, go_fast, notes


def final_error(err: BaseException, healthy: bool) -> BaseException:
    """The exception a failed request ends with. ``err`` is detached from the failed work's frames (its
    traceback and chained exceptions dropped), so the memory those frames hold can be released before the
    result is raised: a :class:`RequestError` as one clean line; an out-of-memory error (by type) as a
    message that says whether the model is ready again (``healthy``: the engine's health; on several GPUs a
    failed pass can leave it unhealthy) and what to try; anything else as it was raised. Logs one line for a
    request error and the traceback of anything else (as text: a log record holding the exception would keep
    its frames alive)."""
    if isinstance(err, RequestError):
        log.error("%s", str(err))
    else:
        log.error("the request failed:\n%s", "".join(traceback.format_exception(err)).rstrip())
    err.__traceback__ = err.__context__ = err.__cause__ = None
    if isinstance(err, RequestError):
        return RequestError(str(err))
    if isinstance(err, torch.OutOfMemoryError):
        if not healthy:
            return RuntimeError("out of GPU memory during this prediction; the model must be restarted")
        return RuntimeError(
            "out of GPU memory during this prediction; memory was released and the model is ready again. "
            "Try fewer chunks per request, the distilled preset, or go_fast"
        )
    return err
