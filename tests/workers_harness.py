"""Real Celery workers for tests: in-process (memory broker) or as separate processes (Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """`celery -A workers worker` in its own process, with the environment the test chose."""

    def __init__(self, env: dict[str, str], *, concurrency: int = 8) -> None:
        self.name = f"w{uuid.uuid4().hex[:8]}@test"
        self.output: list[str] = []
        self._ready = threading.Event()
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "-n",
                self.name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60):
            self.kill()
            raise RuntimeError("celery worker did not start:\n" + "".join(self.output[-40:]))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if " ready." in line:
                self._ready.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def worker_processes(
    env: dict[str, str], count: int = 1, concurrency: int = 8
) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(env, concurrency=concurrency) for _ in range(count)]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    """Poll a condition on real servers (a worker in another process) until it holds or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
