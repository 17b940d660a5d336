"""Processes of a test's own Ray cluster, found by an environment tag (``LAMO_RAY_TEST_TAG=<unique>``,
inherited from ``ray start`` or the sweep driver by raylets, workers and job drivers). Tests stop
exactly those, never with ``ray stop``, which ends every Ray process of the user on the machine. Also
what tests that start processes of their own share: a free local port (`free_port`) and a gloo process
group for data-parallel workers (`gloo_group`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """This process as rank ``rank`` of a ``world``-process torch.distributed gloo group on 127.0.0.1:``port``
    (Ray Train's CPU backend), destroyed on exit; nothing with one process."""
    import torch.distributed as dist

    if world == 1:
        yield
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


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
