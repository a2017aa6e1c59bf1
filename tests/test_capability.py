"""Kernels decided from what this torch can run here: the fp8 probe, FlashAttention-3's reason, and the
warm-up's eager fallback taken for compiler errors only."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed
from torch._inductor.exc import CppCompileError

from gamecraft.model import attention, fp8
from gamecraft.serving import build


@pytest.fixture
def fresh_probes():
    fp8._probe.cache_clear()
    attention.fa3_unavailable_reason.cache_clear()
    yield
    fp8._probe.cache_clear()
    attention.fa3_unavailable_reason.cache_clear()


def test_the_fp8_probe_runs_the_fp8_linear_of_this_torch(fresh_probes, monkeypatch):
    assert fp8.fp8_unavailable_reason("cpu") is None  # torch's CPU kernel runs it (the tests' go_fast)

    def unsupported(*args, **kwargs):  # what cuBLAS answers on sm120 for row-wise scales
        raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul")

    fp8._probe.cache_clear()
    monkeypatch.setattr(torch, "_scaled_mm", unsupported)
    reason = fp8.fp8_unavailable_reason(torch.device("cpu"))
    assert reason == (
        f"torch._scaled_mm fails on cpu with torch {torch.__version__}: RuntimeError: "
        "CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul"
    )


def test_fa3_keeps_and_logs_why_it_cannot_be_used(fresh_probes, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "fa3_fwd_interface", None)  # importing it raises ImportError
    with caplog.at_level(logging.WARNING, logger="gamecraft.model.attention"):
        assert not attention.fa3_available()
        assert not attention.fa3_available()
    reason = attention.fa3_unavailable_reason()
    assert reason.startswith("the fa3-fwd package does not import (ModuleNotFoundError: import of fa3_fwd_interface")
    assert [r.getMessage() for r in caplog.records] == [f"FlashAttention-3 unavailable: {reason}"]  # once


class FakeEngine:
    """A compiled engine whose first warm-up raises ``error``; the second (eager) one works."""

    compiled = True

    def __init__(self, error: BaseException):
        self.error, self.disabled = error, False

    def warm_up(self, shapes, height, width, timed=None):
        if not self.disabled:
            raise self.error
        return "eager warm-up"

    def disable_compile(self):
        self.disabled = True


def compiler_wrapped(cause: BaseException) -> BaseException:
    """``cause`` raised inside a compiler backend, as Dynamo reports it."""
    try:
        try:
            raise cause
        except BaseException as err:
            raise BackendCompilerFailed(lambda *a: None, err, None) from err
    except BackendCompilerFailed as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "error, eager",
    [
        (compiler_wrapped(RuntimeError("no C compiler (fake)")), True),
        (CppCompileError(["g++"], "fatal error: Python.h: No such file"), True),
        # a kernel that fails at run time fails eagerly too: setup must say so, not retry
        (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul"), False),
        (ValueError("a model error"), False),
        (compiler_wrapped(torch.OutOfMemoryError("CUDA out of memory")), False),  # eager needs more
    ],
    ids=["backend", "cpp_compile", "kernel", "model", "oom_in_compile"],
)
def test_only_compiler_errors_take_the_eager_fallback(error, eager):
    plan = type("Plan", (), dict(warm_shapes=(), timed_shapes=(), size=(32, 48)))()
    engine = FakeEngine(error)
    if eager:
        assert build.warm_up(engine, plan) == "eager warm-up" and engine.disabled
    else:
        with pytest.raises(type(error)):
            build.warm_up(engine, plan)
        assert not engine.disabled
