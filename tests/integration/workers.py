"""Worker processes for integration tests: real ``python -m pipeline worker`` subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

_ASSIGNED = re.compile(r"partitions assigned: \[(.*)\]")


class WorkerProcess:
    def __init__(self, worker_id: str, env: dict[str, str], log_dir: Path, args: list[str] | None = None,
                 command: list[str] | None = None) -> None:
        self.worker_id = worker_id
        self.log_path = log_dir / f"{worker_id}.log"
        self._log = self.log_path.open("wb")
        cmd = command or [sys.executable, "-m", "pipeline", "worker"]
        self.proc = subprocess.Popen(
            [*cmd, "--worker-id", worker_id, *(args or [])],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assigned(self) -> list[str]:
        """The partitions of the worker's latest assignment, from its log."""
        found = _ASSIGNED.findall(self.log())
        return [p.strip(" '") for p in found[-1].split(",") if p.strip()] if found else []

    def joined(self) -> bool:
        """Whether the worker has had an assignment (an empty one too): it is in the group."""
        return _ASSIGNED.search(self.log()) is not None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_assigned(self, partitions: int, timeout_s: float = 60) -> None:
        """Wait until the worker holds ``partitions`` partitions; stop it if it never does."""
        try:
            wait_until(lambda: len(self.assigned()) == partitions, timeout_s,
                       f"worker {self.worker_id} to hold {partitions} partitions", [self])
        except AssertionError:
            self.stop()
            raise

    def stop(self, timeout_s: float = 60) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def wait_until(predicate, timeout_s: float, what: str, workers: list[WorkerProcess] = (),  # type: ignore[no-untyped-def, assignment]
               logs_of: list[WorkerProcess] = ()) -> None:  # type: ignore[assignment]
    """Poll ``predicate``; fail at once if one of ``workers`` exits, and at the timeout
    with the logs of ``workers`` and ``logs_of`` (workers expected to exit go there)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        for w in workers:
            if not w.alive():
                raise AssertionError(f"worker {w.worker_id} exited {w.proc.returncode}:\n{w.log()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.worker_id}\n{w.log()[-2000:]}" for w in [*workers, *logs_of])
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{logs}")
        time.sleep(0.2)
