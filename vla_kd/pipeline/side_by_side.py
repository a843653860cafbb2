"""Stages that do not wait for each other, run side by side in worker processes.

After the teacher's training the pipeline's trainings (the action expert's and each student's)
read only the demonstrations, the teacher and, for some students, the action expert. On two
cores one training at torch's two threads runs about 1.86x one thread, while two one-thread
trainings side by side run 1.37x one two-thread training in the same wall time
(docs/experiments/speed.md), so the pipeline runs them ``workers`` at a time, one torch
thread each. A stage starts when the stages it ``needs`` have finished and a worker is free;
among those ready, the earliest in the list goes first. A stage that ``spreads`` (it rolls out
environments in worker processes of its own, as RPD and OPD do) never runs beside another that
spreads: RPD beside OPD took 1.55x and 1.63x their one-after-another times, slower than running
them one after the other, while either beside a one-process training took about 1.2x.

Each stage's result is recorded in the run's :class:`~vla_kd.pipeline.state.PipelineState` as
soon as it finishes, so ``resume=true`` after a crash repeats only what had not finished. If a
stage fails, no further stage starts, the ones running are let finish (and kept), and the
first error is raised.

Worker processes log through this process's handlers (one log for the run), and their
progress bars take one terminal line per worker.
"""
from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from vla_kd.parallel import single_torch_thread
from vla_kd.pipeline.state import PipelineState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One stage: ``work(*args)`` under ``name``, once the stages named in ``needs`` finished;
    ``spreads``: it runs worker processes of its own. ``work`` and ``args`` must pickle (a
    module-level function, config nodes, paths)."""

    name: str
    work: Callable[..., Any]
    args: tuple = ()
    needs: tuple[str, ...] = ()
    spreads: bool = False


def run_side_by_side(stages: list[Stage], state: PipelineState, workers: int) -> dict[str, Any]:
    """Run ``stages`` (resuming: only those ``state`` has not recorded), at most ``workers`` at a
    time; every stage's result by name. ``workers=1``: one after another in this process, with
    its torch threads, as the pipeline ran before."""
    names = [stage.name for stage in stages]
    for stage in stages:
        unknown = [need for need in stage.needs if need not in names[: names.index(stage.name)]]
        if unknown:
            raise ValueError(f"stage {stage.name} needs {unknown}, which are not listed before it")
    results = {stage.name: state.replay(stage.name) for stage in stages if state.finished(stage.name)}
    pending = [stage for stage in stages if stage.name not in results]
    if workers <= 1 or len(pending) <= 1:
        for stage in pending:
            results[stage.name] = state.run_stage(stage.name, stage.work, *stage.args)
        return results
    workers = min(workers, len(pending))
    with _WorkerPool(workers) as pool:
        _schedule(pending, state, pool, workers, results)
    return results


def _schedule(pending: list[Stage], state: PipelineState, pool: ProcessPoolExecutor, workers: int,
              results: dict[str, Any]) -> None:
    running: dict[Future, Stage] = {}
    error: BaseException | None = None
    while pending or running:
        spreading = any(s.spreads for s in running.values())
        ready = [s for s in pending
                 if all(need in results for need in s.needs) and not (s.spreads and spreading)]
        while error is None and ready and len(running) < workers:
            stage = ready.pop(0)
            pending.remove(stage)
            if stage.spreads:  # the others that spread wait for this one
                ready = [s for s in ready if not s.spreads]
            log.info("stage %s: started beside %s", stage.name,
                     ", ".join(s.name for s in running.values()) or "nothing")
            running[pool.submit(_timed, stage.work, stage.args)] = stage
        if not running:
            break  # after an error: what is left does not start
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            stage = running.pop(future)
            try:
                result, seconds = future.result()
            except BaseException as failure:  # re-raised once the stages beside it finish
                log.error("stage %s failed; stages running beside it finish and are kept", stage.name)
                error = error or failure
                continue
            results[stage.name] = result
            state.keep(stage.name, result, seconds)
    if error is not None:
        raise error


def _timed(work: Callable[..., Any], args: tuple) -> tuple[Any, float]:
    """``work(*args)`` and its seconds, in a worker (its time excludes waiting for a worker)."""
    started = time.perf_counter()
    result = work(*args)
    return result, time.perf_counter() - started


def _start_worker(log_queue, lines) -> None:
    """Initializer of a stage worker: one torch thread, logging into the run's handlers, and
    progress bars on a terminal line of its own."""
    single_torch_thread()
    root = logging.getLogger()
    root.handlers = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(logging.INFO)
    os.environ["TQDM_POSITION"] = str(lines.get())  # tqdm reads defaults from TQDM_* variables


class _WorkerPool(ProcessPoolExecutor):
    """A process pool whose workers log through this process's root handlers."""

    def __init__(self, workers: int) -> None:
        # forkserver: a fork of a process holding torch threads is not safe.
        context = multiprocessing.get_context("forkserver")
        self._manager = context.Manager()
        log_queue, lines = self._manager.Queue(), self._manager.Queue()
        for line in range(workers):
            lines.put(line)
        self._listener = logging.handlers.QueueListener(
            log_queue, *logging.getLogger().handlers, respect_handler_level=True
        )
        self._listener.start()
        super().__init__(workers, mp_context=context,
                         initializer=_start_worker, initargs=(log_queue, lines))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        try:
            super().shutdown(wait=wait, cancel_futures=cancel_futures)
        finally:
            self._listener.stop()
            self._manager.shutdown()
