"""Processes of a test's own Ray cluster, found by an environment tag (``LAMO_RAY_TEST_TAG=<unique>``,
inherited from ``ray start`` or the sweep driver by raylets, workers and job drivers). Tests stop
exactly those, never with ``ray stop``, which ends every Ray process of the user on the machine."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def tagged_pids(var: str, value: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``var=value``."""
    needle = f"{var}={value}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ:
            pids.append(int(entry))
    return pids


def kill_tagged(var: str, value: str, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> list[int]:
    """Send ``sig`` to the tagged processes, SIGKILL whatever is left after ``grace_s``; returns the pids."""
    pids = tagged_pids(var, value)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace_s
    while time.time() < deadline and tagged_pids(var, value):
        time.sleep(0.5)
    for pid in tagged_pids(var, value):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def wait_healthy(proc, base_url: str, log_path: Path, timeout_s: float, poll_s: float = 0.3) -> None:
    """Wait until the server ``proc`` (an MLflow server) answers 200 on ``<base_url>/health``; fail with the
    tail of ``log_path`` if it exits or is not up within ``timeout_s``."""
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, f"server exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
        assert time.time() < deadline, f"server not up in {timeout_s} s:\n{log_path.read_text()[-3000:]}"
        time.sleep(poll_s)
