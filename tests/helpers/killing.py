"""Kill-and-resume tests: start a worker, wait for its "ready" file, then SIGKILL it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def sigkill_when_ready(
    command: list[str], environment: dict[str, str], ready: Path, waiting_for: str
) -> None:
    """Run ``command`` until it creates ``ready``, then SIGKILL it (at most 240 s of waiting).

    Raises AssertionError when the worker exits first (with its output) or never gets there
    (``waiting_for`` says what it should have reached).
    """
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            if process.poll() is not None:
                raise AssertionError(f"worker exited early: {process.stdout.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker never reached {waiting_for}")
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def worker_environment(log: Path, hang_variable: str, hang_value: int | None) -> dict[str, str]:
    """A worker's environment: JAX's plain defaults (not the session's 4 devices and x64).

    The worker logs to ``log`` (``V4JAX_TEST_LOG``) and hangs where ``hang_variable`` says
    (set to ``hang_value``; unset when None).
    """
    environment = {**os.environ, "V4JAX_TEST_LOG": str(log)}
    environment.pop("XLA_FLAGS", None)
    environment.pop(hang_variable, None)
    if hang_value is not None:
        environment[hang_variable] = str(hang_value)
    return environment
