"""Persistent worker processes, one per extra GPU, kept for the predictor's lifetime.

``ParallelRuntime.start`` spawns ranks 1..N−1 (``torch.multiprocessing``, spawn) and returns at once;
rank 0 (the calling process) joins them on a background thread in one process group (NCCL on GPUs,
gloo on CPUs) and the sequence-parallel groups. Each worker joins, builds its own models with
``spec`` (transformers and VAE, no text encoders), reports ready, and then loops: receive a command
from rank 0, run its share (:class:`gamecraft.parallel.passes.PassRunner`), repeat until ``stop``.
So the caller can load its own engine while the workers load theirs (``setup()`` starts them before
loading when the weights need no conversion), then :meth:`~ParallelRuntime.attach` it and
:meth:`~ParallelRuntime.wait_ready`.

Failure handling — never a hang:

* rank 0 runs every distributed call on one dedicated thread; the caller waits for it while watching
  the workers. A cancellation (coglet raises it in the main thread) therefore never interrupts a
  pass half-way through its collectives: the pass finishes in the background and the next call waits
  for it, so the ranks stay in step;
* a monitor thread watches the worker processes; when one exits, the runtime is marked failed, the
  process groups are aborted (so a blocked collective returns) and every later call raises
  :class:`WorkerFailure` with the worker's exit code (``healthy`` is False from then on);
* a worker whose command raises reports the error and exits, which is the case above;
* a command that raises on rank 0 (out of memory on GPU 0) leaves the workers inside the pass's
  collectives: the runtime fails the same way (cause: a worker's report if one failed first, else rank
  0's error), the workers are stopped, and every call raises :class:`WorkerFailure` at once. No rank
  tries to recover: none can tell how far the others got through the collectives;
* collectives also carry a timeout (``timeout_s``).

No signal handlers are installed (coglet uses SIGUSR1 for cancellation). NCCL's NVLink multicast is
switched off before any rank starts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import logging
import multiprocessing.connection
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gamecraft.engine.base import EngineFailed
from gamecraft.specs.workers import WorkerSpec

from .commands import Command, Stop
from .passes import Groups, PassRunner, make_groups

log = logging.getLogger(__name__)

# Rank 0's rendezvous threads still running in this process. One whose workers stopped before they
# joined waits until its timeout; a new runtime's default group would meanwhile get another name
# than its fresh workers' (torch numbers default groups per process), so a new start is refused.
_JOINING: set[threading.Thread] = set()
_JOINING_LOCK = threading.Lock()
FAULT_REPORT_S = 2.0  # how long a fault on rank 0 waits for a worker's report of its own cause


class WorkerFailure(EngineFailed):
    """A worker rank died or failed; the multi-GPU runtime cannot be used any more."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init(rank: int, world_size: int, init_method: str, backend: str, device: str, timeout_s: float) -> None:
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    kwargs = dict(device_id=torch.device(device)) if backend == "nccl" else {}
    dist.init_process_group(
        backend,
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )


def _worker_main(
    rank: int,
    world_size: int,
    init_method: str,
    backend: str,
    device: str,
    spec: WorkerSpec,
    num_heads: int,
    timeout_s: float,
    reports,
) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    try:
        # Join first (rank 0 joins on a thread at once, so this takes no longer than the imports;
        # a rendezvous left waiting for a rank that loads its models first can time out), then load
        # while rank 0 loads its own models.
        _init(rank, world_size, init_method, backend, device, timeout_s)
        groups = make_groups(world_size, rank, num_heads)
        runner = PassRunner(spec.build(device), groups, rank, world_size)
        reports.put((rank, None))
    except BaseException as err:  # noqa: BLE001 - reported to rank 0, then this rank exits
        _report_and_exit(reports, rank, err)
    while True:
        try:
            received = [None]
            dist.broadcast_object_list(received, src=0, group=groups.command)
            command = received[0]
            if isinstance(command, Stop):
                break
            runner.run(command)
        except BaseException as err:  # noqa: BLE001 - the ranks are out of step now: leave
            _report_and_exit(reports, rank, err)
    dist.destroy_process_group()


def _report_and_exit(reports, rank: int, err: BaseException) -> None:
    """Tell rank 0 why this rank stops, then exit at once (no atexit/NCCL teardown that could hang)."""
    traceback.print_exc()
    reports.put((rank, f"{type(err).__name__}: {err}"))
    # Queue.put hands the report to a feeder thread; flush it before os._exit or it can be lost
    # (rank 0 would then report the exit code without the reason).
    reports.close()
    reports.join_thread()
    os._exit(1)


class ParallelRuntime:
    """Rank 0's handle on the worker ranks (see the module docstring)."""

    def __init__(self, world_size: int, devices: list[str], backend: str, timeout_s: float):
        self.world_size = world_size
        self.devices = devices
        self.backend = backend
        self.timeout_s = timeout_s
        self.runner: PassRunner | None = None
        self.groups: Groups | None = None
        self._processes: list[mp.Process] = []
        self._reports = None
        self._reports_lock = threading.Lock()
        self._ready: set[int] = set()
        self._errors: dict[int, str] = {}
        self._failure: str | None = None
        self._fail_lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gamecraft-rank0")
        self._pending: concurrent.futures.Future | None = None
        self._joined: concurrent.futures.Future = concurrent.futures.Future()  # rank 0 in the process group
        self._engine = None  # rank 0's engine until the group is joined (attach)
        self._closed = False

    # -- start-up ------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        world_size: int,
        spec: WorkerSpec,
        num_heads: int,
        devices: list[str] | None = None,
        backend: str | None = None,
        timeout_s: float = 900.0,
    ) -> ParallelRuntime:
        """Spawn the workers and return at once; rank 0 joins the process group on a background thread
        while they start. Then :meth:`attach` rank 0's engine and :meth:`wait_ready`."""
        if world_size < 2:
            raise ValueError("a parallel runtime needs at least 2 ranks")
        devices = devices or [f"cuda:{i}" for i in range(world_size)]
        if len(devices) != world_size:
            raise ValueError(f"{len(devices)} devices for {world_size} ranks")
        backend = backend or ("nccl" if devices[0].startswith("cuda") else "gloo")
        with _JOINING_LOCK:
            if _JOINING:
                raise RuntimeError(
                    "rank 0 is still joining an earlier multi-GPU runtime whose workers stopped "
                    "before they joined; it gives up after its timeout (restart the process)"
                )
        # NVLink multicast stays off (here, so every caller and every spawned worker inherits it): on
        # shared hosts a program using it can take all of the machine's GPUs down.
        os.environ.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
        runtime = cls(world_size, devices, backend, timeout_s)
        init_method = f"tcp://127.0.0.1:{_free_port()}"
        context = mp.get_context("spawn")
        runtime._reports = context.Queue()
        for rank in range(1, world_size):
            process = context.Process(
                target=_worker_main,
                name=f"gamecraft-rank{rank}",
                daemon=True,
                args=(
                    rank,
                    world_size,
                    init_method,
                    backend,
                    devices[rank],
                    spec,
                    num_heads,
                    timeout_s,
                    runtime._reports,
                ),
            )
            process.start()
            runtime._processes.append(process)
        threading.Thread(target=runtime._watch, name="gamecraft-worker-monitor", daemon=True).start()
        # A daemon thread, not the rank-0 executor: if a worker dies before joining, this thread stays
        # blocked in the rendezvous (until timeout_s) and must not keep the process from exiting.
        join = threading.Thread(
            target=runtime._join, args=(init_method, num_heads), name="gamecraft-rank0-join", daemon=True
        )
        with _JOINING_LOCK:
            _JOINING.add(join)
        join.start()
        return runtime

    def _join(self, init_method: str, num_heads: int) -> None:
        try:
            _init(0, self.world_size, init_method, self.backend, self.devices[0], self.timeout_s)
            self.groups = make_groups(self.world_size, 0, num_heads)
            self._joined.set_result(None)
        except BaseException as err:  # noqa: BLE001 - handed to wait_ready
            self._joined.set_exception(err)
        finally:
            with _JOINING_LOCK:
                _JOINING.discard(threading.current_thread())

    def attach(self, engine) -> None:
        """Rank 0's own models (the predictor's engine); used from :meth:`wait_ready` on."""
        self._engine = engine

    def wait_ready(self, timeout_s: float = 3600.0) -> None:
        """Block until every worker has built its models; ``WorkerFailure`` if one fails or dies."""
        deadline = time.monotonic() + timeout_s
        while not self._joined.done() or len(self._ready) < self.world_size - 1:
            self._raise_if_failed()
            if self._joined.done() and self._joined.exception() is not None:
                err = self._joined.exception()
                self._fail(f"rank 0 could not join the process group: {type(err).__name__}: {err}")
                self._raise_if_failed()
            self._drain_reports(wait_s=1.0)
            failed = sorted(self._errors)
            if failed:
                self._fail(f"GPU worker {failed[0]} failed while loading: {self._errors[failed[0]]}")
                self._raise_if_failed()
            if time.monotonic() > deadline:
                waiting = sorted(set(range(1, self.world_size)) - self._ready)
                raise WorkerFailure(f"GPU workers {waiting} not ready after {timeout_s:.0f}s")
        if self.runner is None:
            if self._engine is None:
                raise RuntimeError("attach() rank 0's engine before wait_ready()")
            self.runner = PassRunner(self._engine, self.groups, 0, self.world_size)
        log.info("%d GPU workers ready", self.world_size - 1)

    def _drain_reports(self, wait_s: float) -> None:
        """Move the workers' reports (ready, or an error just before exiting) into ``_ready``/``_errors``."""
        with self._reports_lock:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    rank, error = self._reports.get(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:  # queue.Empty
                    return
                if error is None:
                    self._ready.add(rank)
                else:
                    self._errors.setdefault(rank, error)

    # -- health ----------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self._failure is None and not self._closed

    @property
    def failure(self) -> str | None:
        """Why the runtime cannot run any more (None while it can)."""
        if self._failure is None and self._closed:
            return "the multi-GPU runtime is closed"
        return self._failure

    def _watch(self) -> None:
        sentinels = {p.sentinel: p for p in self._processes}
        while sentinels and not self._closed:
            for ready in multiprocessing.connection.wait(list(sentinels), timeout=1.0):
                process = sentinels.pop(ready)
                process.join(0)
                if not self._closed:
                    rank = int(process.name.removeprefix("gamecraft-rank"))
                    deadline = time.monotonic() + 2.0  # its last report may still be in the queue
                    while rank not in self._errors and time.monotonic() < deadline:
                        self._drain_reports(wait_s=0.1)
                    detail = self._errors.get(rank)
                    self._fail(
                        f"GPU worker {rank} exited with code {process.exitcode}{': ' + detail if detail else ''}"
                    )

    def _fail(self, message: str) -> None:
        with self._fail_lock:
            if self._failure is not None:
                return
            self._failure = message
        log.error("multi-GPU runtime failed: %s; the model must be restarted", message)
        # unblock a collective waiting for the dead rank (gloo raises on its own when a peer is gone)
        with contextlib.suppress(Exception):
            dist.distributed_c10d._abort_process_group()
        # out of step for good: stop every worker, so none is left in a collective holding its GPU's memory
        for process in self._processes:
            with contextlib.suppress(Exception):
                if process.is_alive():
                    process.kill()

    def _fault(self, what: str, err: BaseException) -> None:
        """Rank 0's share of ``what`` raised: fail the runtime, naming a worker's error if one failed first."""
        if self._failure is not None:
            return
        deadline = time.monotonic() + FAULT_REPORT_S
        self._drain_reports(wait_s=0.1)
        # a worker that failed reported before exiting; while every worker lives, the fault is rank 0's own
        while not self._errors and time.monotonic() < deadline and not all(p.is_alive() for p in self._processes):
            self._drain_reports(wait_s=0.1)
        failed = sorted(self._errors)
        if failed:
            self._fail(f"GPU worker {failed[0]} failed in {what}: {self._errors[failed[0]]}")
        else:
            self._fail(f"rank 0 failed in {what}: {type(err).__name__}: {err}")

    def _run(self, fn: Callable[[], Any], what: str) -> Any:
        """``fn`` on the rank-0 thread; an error in it fails the runtime, even with no caller waiting."""
        try:
            return fn()
        except BaseException as err:
            self._fault(what, err)
            raise

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise WorkerFailure(f"{self._failure}; the model must be restarted")
        if self._closed:
            raise WorkerFailure("the multi-GPU runtime is closed")

    # -- calls -----------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` on the rank-0 thread and wait, watching for failures. A previous call that was
        interrupted (cancellation) is waited for first."""
        self._raise_if_failed()
        if self._pending is not None and not self._pending.done():
            log.info("waiting for the interrupted multi-GPU call to finish")
        while self._pending is not None and not self._pending.done():
            self._raise_if_failed()
            concurrent.futures.wait([self._pending], timeout=1.0)
        self._pending = future = self._executor.submit(self._run, fn, what)
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                self._raise_if_failed()
            except Exception as err:
                self._fault(what, err)  # already done on the rank-0 thread; the failure is set either way
                raise WorkerFailure(f"{self._failure}; the model must be restarted") from err

    def command(self, command: Command, payload: Any = None) -> Any:
        """Announce ``command`` to the workers and run rank 0's share (``payload``: its tensors)."""
        if self.runner is None:
            raise RuntimeError("the multi-GPU runtime is not ready: call wait_ready() first")

        def run():
            dist.broadcast_object_list([command], src=0, group=self.groups.command)
            return self.runner.run(command, payload)

        return self._call(run, type(command).__name__)

    def close(self) -> None:
        """Stop the workers (best effort; idempotent)."""
        if self._closed:
            return
        if not self._joined.done() and self._failure is None:
            # Let live workers finish joining (they join once they have imported torch), so that
            # they can be stopped cleanly and no rendezvous is left waiting in this process.
            deadline = time.monotonic() + min(self.timeout_s, 120.0)
            while not self._joined.done() and self._failure is None and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    self._joined.result(timeout=1.0)
        if self._failure is None and self.groups is not None:
            with contextlib.suppress(Exception):
                self._call(lambda: dist.broadcast_object_list([Stop()], src=0, group=self.groups.command), what="stop")
        self._closed = True
        for process in self._processes:
            process.join(timeout=10 if self.groups is not None else 0)  # not joined yet: nothing to finish
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
        self._executor.shutdown(wait=False)
