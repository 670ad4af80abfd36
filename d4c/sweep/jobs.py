"""One job of a sweep (a generation or a cell): a ``d4c-quant`` process with its log, and its outcome.

Each job runs the main command line in a process of its own (``python -m d4c.cli``), so a crash,
a bad cell or an out-of-memory kill never takes the sweep down; its output goes to its log file
(appended, one header per attempt, so requeued attempts stay readable).
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENERATION, CELL = "generation", "cell"
TERMINATE_GRACE_S = 60.0


@dataclass
class Job:
    """What to run: ``d4c-quant`` flags, the file it must leave, its log, and the generation it waits for."""

    name: str
    kind: str
    argv: list[str]
    output: Path
    log: Path
    depends: str | None = None
    """The name of the generation job this cell reuses; it runs first."""


@dataclass
class Outcome:
    """How a job ended: ``ok``, ``failed`` (non-zero exit or no result file) or ``skipped`` (its generation failed)."""

    name: str
    status: str
    returncode: int | None
    seconds: float
    log: Path
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Running:
    """A started job's process (for Ctrl-C, preemption and timeouts)."""

    job: Job
    process: subprocess.Popen
    began: float = field(default_factory=time.perf_counter)


def command(job: Job) -> list[str]:
    """The process a job runs: this interpreter's ``d4c-quant`` (the same program, no PATH look-up)."""
    return [sys.executable, "-m", "d4c.cli", *job.argv]


def start(job: Job, env: dict[str, str] | None = None) -> Running:
    """Start ``job``'s process, its output appended to its log after a header."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        gpus = (env or {}).get("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
        log.write(f"=== {now} on {socket.gethostname()}{f' (CUDA_VISIBLE_DEVICES={gpus})' if gpus else ''}: "
                  f"{' '.join(command(job))}\n")
        log.flush()
        process = subprocess.Popen(command(job), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    return Running(job, process)


def finish(running: Running) -> Outcome:
    """Wait for a started job and tell how it ended."""
    returncode = running.process.wait()
    return outcome_of(running.job, returncode, time.perf_counter() - running.began)


def outcome_of(job: Job, returncode: int, seconds: float) -> Outcome:
    if returncode == 0 and job.output.is_file():
        return Outcome(job.name, "ok", 0, seconds, job.log)
    detail = f"exit {returncode}" if returncode else f"exit 0 but no {job.output}"
    return Outcome(job.name, "failed", returncode, seconds, job.log, detail)


def stop(running: Running, grace_s: float = TERMINATE_GRACE_S) -> None:
    """Interrupt a job as Ctrl-C would (SIGINT: it keeps its finished stages and checkpoints), then kill it if it
    has not ended after ``grace_s`` seconds."""
    if running.process.poll() is not None:
        return
    try:
        os.killpg(running.process.pid, signal.SIGINT)
        running.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(running.process.pid, signal.SIGKILL)
        running.process.wait()
    except ProcessLookupError:
        pass


def run(job: Job, env: dict[str, str] | None = None) -> Outcome:
    """Run ``job`` to its end (Ctrl-C interrupts it and propagates)."""
    running = start(job, env)
    try:
        return finish(running)
    except BaseException:
        stop(running)
        raise


def describe(outcome: Outcome) -> str:
    return f"{outcome.name}: {outcome.detail or outcome.status}, log {outcome.log}"


def summary_line(outcomes: list[Outcome]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts
