"""Where a sweep's jobs run: ``local`` (one after another), ``gpus`` (one worker per visible GPU), ``slurm``
(job arrays through submitit; on a machine without SLURM, submitit's local executor).

Every executor runs generations before the cells that reuse their images, keeps going when a job
fails (a cell whose generation failed is skipped: it would only fail again, slower) and returns one
:class:`~d4c.sweep.jobs.Outcome` per job. Ctrl-C interrupts the running jobs as Ctrl-C interrupts
``d4c-quant`` (finished stages and checkpoints are kept) and leaves every finished cell intact.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from d4c.errors import D4CError
from d4c.sweep import jobs as J

logger = logging.getLogger(__name__)
EXECUTORS = ("local", "gpus", "slurm")
SUBMITIT_HINT = "pip install submitit (or pip install -e '.[scale]')"


def _skipped(job: J.Job, generation: J.Outcome) -> J.Outcome:
    return J.Outcome(job.name, "skipped", None, 0.0, job.log, f"its generation {generation.name} failed")


def run_slots(jobs: list[J.Job], slots: list[dict[str, str]], report: Callable[[J.Outcome], None]) -> list[J.Outcome]:
    """Run ``jobs`` on ``len(slots)`` workers (each with its environment, e.g. ``CUDA_VISIBLE_DEVICES``).

    A worker takes the first job whose generation has finished, in list order (generations first).
    """
    pending, outcomes = list(jobs), {}
    running: dict[int, J.Running] = {}
    lock = threading.Condition()
    interrupted = threading.Event()

    def next_job() -> J.Job | None:
        with lock:
            while pending and not interrupted.is_set():
                for job in pending:
                    dep = outcomes.get(job.depends) if job.depends else None
                    if job.depends and job.depends in {j.name for j in pending} | {r.job.name for r in running.values()}:
                        continue  # its generation has not finished yet
                    pending.remove(job)
                    if dep is not None and not dep.ok:
                        outcomes[job.name] = _skipped(job, dep)
                        report(outcomes[job.name])
                        lock.notify_all()
                        break
                    return job
                else:
                    lock.wait(1.0)
            return None

    def worker(index: int, env: dict[str, str]) -> None:
        while True:
            job = next_job()
            if job is None:
                return
            started = J.start(job, env)
            with lock:
                running[index] = started
            outcome = J.finish(started)
            with lock:
                del running[index]
                if not interrupted.is_set():
                    outcomes[job.name] = outcome
                    report(outcome)
                lock.notify_all()

    threads = [threading.Thread(target=worker, args=(i, env), daemon=True) for i, env in enumerate(slots)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
    except KeyboardInterrupt:
        interrupted.set()
        with lock:
            active = list(running.values())
        for r in active:
            J.stop(r)
        for t in threads:
            t.join(timeout=J.TERMINATE_GRACE_S)
        raise
    return [outcomes[j.name] for j in jobs if j.name in outcomes]


def visible_gpus(requested: str | None = None) -> list[str]:
    """The GPUs to use: ``requested`` (``0,1,3``), else ``CUDA_VISIBLE_DEVICES``, else every CUDA device."""
    if requested:
        return [g.strip() for g in requested.split(",") if g.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass
class SlurmOptions:
    """SLURM through submitit: the job arrays' resources and accounts."""

    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    array_parallelism: int | None = None
    """At most this many jobs of an array at once (SLURM's ``%N``; locally: how many processes run at once)."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    cluster: str | None = None
    """submitit's cluster: None detects (``slurm`` when ``sbatch`` exists, else ``local``), or ``local`` / ``slurm``."""
    wait: bool = True
    """Wait for the arrays and report; False only submits (SLURM runs the cells array after the generations)."""


class CommandJob:
    """A submitit job running one sweep job; checkpointable: on preemption or timeout it stops its process
    (which keeps its generation / reconstruction checkpoints) and is requeued, and the requeued run resumes."""

    def __init__(self, job: J.Job) -> None:
        self.job = job
        self._running: J.Running | None = None

    def __call__(self) -> J.Outcome:
        if self.job.output.is_file():  # a requeued attempt after the result was written
            return J.Outcome(self.job.name, "ok", 0, 0.0, self.job.log)
        self._running = J.start(self.job)
        try:
            return J.finish(self._running)
        except KeyboardInterrupt:  # cancelled: the process keeps its checkpoints, as under Ctrl-C
            J.stop(self._running)
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        if self._running is not None:
            J.stop(self._running, grace_s=30.0)
        return submitit.helpers.DelayedSubmission(CommandJob(self.job))

    def __getstate__(self) -> dict[str, Any]:
        return {"job": self.job, "_running": None}


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise D4CError(f"--executor slurm runs through submitit, which is not installed: {SUBMITIT_HINT}.") from None
    return submitit


def make_executor(folder: Path, options: SlurmOptions) -> Any:
    """A configured ``submitit.AutoExecutor`` (SLURM parameters pass through; the local executor ignores them)."""
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=options.cluster)
    params: dict[str, Any] = {"timeout_min": options.timeout_min, "gpus_per_node": options.gpus_per_node,
                              "tasks_per_node": 1, "nodes": 1, "name": "d4c-sweep"}
    if options.cpus_per_task:
        params["cpus_per_task"] = options.cpus_per_task
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if executor.cluster == "slurm":
        slurm = {"partition": options.partition, "account": options.account, "qos": options.qos,
                 "constraint": options.constraint, "array_parallelism": options.array_parallelism}
        params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
    elif executor.cluster == "local":
        params["gpus_per_node"] = 0 if not _cuda_available() else options.gpus_per_node
    executor.update_parameters(**params)
    return executor


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _collect(job: J.Job, handle: Any) -> J.Outcome:
    try:
        return handle.result()
    except Exception as exc:  # noqa: BLE001 - a failed submitit job (killed, out of time) is one failed cell
        return J.Outcome(job.name, "failed", None, 0.0, job.log, f"{type(exc).__name__} in submitit: "
                                                                 f"{str(exc).splitlines()[0] if str(exc) else ''}")


def run_slurm(stages: list[list[J.Job]], folder: Path, options: SlurmOptions,
              report: Callable[[J.Outcome], None]) -> list[J.Outcome]:
    """One job array per stage (generations, then cells). On SLURM the cells array depends on the generations
    array (``afterany``); on the local executor stages run in order, ``array_parallelism`` processes at a time."""
    executor = make_executor(folder, options)
    outcomes: list[J.Outcome] = []
    if executor.cluster != "local":
        previous: list[str] = []
        submitted = []
        for stage in stages:
            if not stage:
                continue
            if previous:
                executor.update_parameters(slurm_additional_parameters={
                    "dependency": "afterany:" + ":".join(sorted({p.split("_")[0] for p in previous}))})
            handles = _submit_array(executor, stage)
            previous = [h.job_id for h in handles]
            submitted.append((stage, handles))
            logger.info(f"Submitted {len(stage)} {stage[0].kind} jobs as array {previous[0].split('_')[0]}.")
        if not options.wait:
            return []
        for stage, handles in submitted:
            for job, handle in zip(stage, handles):
                outcomes.append(_collect(job, handle))
                report(outcomes[-1])
        return outcomes
    width = max(1, options.array_parallelism or 1)
    done_names: dict[str, J.Outcome] = {}
    for stage in stages:
        queue = list(stage)
        active: list[tuple[J.Job, Any]] = []
        try:
            while queue or active:
                while queue and len(active) < width:
                    job = queue.pop(0)
                    dep = done_names.get(job.depends) if job.depends else None
                    if dep is not None and not dep.ok:
                        done_names[job.name] = _skipped(job, dep)
                        outcomes.append(done_names[job.name])
                        report(outcomes[-1])
                        continue
                    active.append((job, executor.submit(CommandJob(job))))
                for job, handle in list(active):
                    if handle.done():
                        active.remove((job, handle))
                        done_names[job.name] = _collect(job, handle)
                        outcomes.append(done_names[job.name])
                        report(outcomes[-1])
                time.sleep(0.5)
        except KeyboardInterrupt:
            for _, handle in active:
                handle.cancel(check=False)
            raise
    return outcomes


def _submit_array(executor: Any, stage: list[J.Job]) -> list[Any]:
    with executor.batch():
        handles = [executor.submit(CommandJob(job)) for job in stage]
    return handles
