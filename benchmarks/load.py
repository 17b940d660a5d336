"""Load check (issue 6 "Load"): a sweep of many short trials on a local Ray cluster started with
``ray start``, watching for leaks while it runs and after it ends.

    python benchmarks/load.py [--trials 50] [--keep]

Starts a head node on 127.0.0.1 (own temp dir and ports, token auth, ``--num-cpus 2``), generates a
small Reacher dataset in a temporary Minari store, runs ``python -m lamo_ray.sweep`` against the
cluster with N tiny trials (4 at a time), and samples every ``--every`` seconds: ALIVE actors,
placement groups not REMOVED, the cluster's processes, their open file descriptors and their
summed RSS. After the sweep it waits ``--settle`` seconds and samples again. Prints a table, a
per-process breakdown and a verdict; exits 1 when something leaked: actors or placement groups
still alive, more processes than at the start, more than ``--fd-slack`` extra file descriptors or
``--rss-slack`` MB extra cluster RSS. Ray's idle worker pool, the detached
``_AutoscalingCoordinatorActor`` that Ray Train creates once per cluster, and the log monitor's
open log files (capped by Ray at 200) are reported but not counted as leaks.

This is a measurement, not a test (it takes ~15-20 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
SINGLETON_ACTOR = "_AutoscalingCoordinatorActor"  # detached, one per cluster, created by Ray Train
RAY = str(BIN / "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries LAMO_RAY_LOAD_TAG=tag (only this cluster's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"LAMO_RAY_LOAD_TAG={tag}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def proc_stats(pids: list[int]) -> dict[str, float]:
    """Process count, open fds and summed RSS (MB) of ``pids``; idle Ray workers counted apart."""
    fds = busy_fds = rss_kb = idle = 0
    alive = 0
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            status = Path(f"/proc/{pid}/status").read_text()
            nfd = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        alive += 1
        fds += nfd
        rss_kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        is_idle = cmdline.startswith(b"ray::IDLE")
        idle += is_idle
        busy_fds += 0 if is_idle else nfd
    return {"processes": alive, "idle_workers": idle, "fds": fds, "busy_fds": busy_fds, "rss_mb": rss_kb / 1024}


def per_process(pids: list[int]) -> dict[str, tuple[int, int, float]]:
    """Process name -> (count, open fds, RSS MB), names from the command line (``ray::X``, raylet, gcs_server, ...)."""
    out: dict[str, list[float]] = {}
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
            nfd = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        first = argv[0].decode(errors="replace")
        name = first.split()[0] if first.startswith("ray::") else Path(first).name
        if name.startswith("python") and len(argv) > 1:  # python -m ray... / script: name it by its module or file
            rest = [a.decode(errors="replace") for a in argv[1:4] if a]
            name = " ".join(Path(a).name for a in rest[:2])
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) / 1024
        row = out.setdefault(name, [0, 0, 0.0])
        row[0] += 1
        row[1] += nfd
        row[2] += rss
    return {k: (int(v[0]), int(v[1]), v[2]) for k, v in out.items()}


def state_counts(env: dict[str, str], dashboard: str) -> dict[str, int]:
    """ALIVE actors (by class) and placement groups not REMOVED, from Ray's state API."""
    def listing(kind: str) -> list[dict]:
        out = subprocess.run([RAY, "list", kind, "--address", dashboard, "--format", "json", "--limit", "10000"],
                             env=env, capture_output=True, text=True, timeout=120)
        if out.returncode == 0 and "No resource in the cluster" in out.stdout:
            return []
        if out.returncode != 0 or "[" not in out.stdout:
            raise RuntimeError(f"ray list {kind} failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
        return json.loads(out.stdout[out.stdout.index("["):])  # warnings may precede the JSON

    actors = [a for a in listing("actors") if a.get("state") == "ALIVE"]
    pgs = [p for p in listing("placement-groups") if p.get("state") != "REMOVED"]
    return {"alive_actors": len(actors), "live_placement_groups": len(pgs),
            "actor_classes": sorted({a.get("class_name", "?") for a in actors})}


def sweep_yaml(trials: int) -> dict:
    return {
        "name": "load",
        "seeds": list(range(trials // 2)),
        "base": {
            "data": {"source": "load/reacher/tiny-v0", "rtg_scale": 10, "context_length": 3, "max_ep_len": 64},
            "model": {"backbone": "gpt2", "pretrained": False, "n_layer": 1, "n_embd": 32, "n_head": 1},
            "train": {"steps": 40, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, "eval_every": 20,
                      "log_every": 20, "cpus_per_worker": 0.49},
            "eval": {"target_returns": [-4.0], "episodes": 2, "num_actors": 1, "envs_per_actor": 2},
        },
        "scheduler": {"type": "fifo"},
        "variants": {"lora": {"model": {"finetune": "lora", "embedding": "mlp"}},
                     "full": {"model": {"finetune": "full", "embedding": "linear"}}},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=50, help="even number of trials (2 variants x trials/2 seeds)")
    p.add_argument("--every", type=float, default=15.0, help="seconds between samples while the sweep runs")
    p.add_argument("--settle", type=float, default=30.0, help="seconds to wait after the sweep before the last sample")
    p.add_argument("--rss-slack", type=float, default=300.0, help="MB of cluster RSS growth tolerated")
    p.add_argument("--fd-slack", type=int, default=100, help="open file descriptors of growth tolerated")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (results, MLflow db, logs)")
    args = p.parse_args(argv)

    tag = f"load-{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="lrl-", dir="/tmp"))  # short: Ray's socket paths stay < 107 chars
    token = uuid.uuid4().hex + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, LAMO_RAY_LOAD_TAG=tag, HF_HUB_OFFLINE="1",
               MINARI_DATASETS_PATH=str(root / "minari"), MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    gcs_port, dash_port = free_port(), free_port()
    dashboard = f"http://127.0.0.1:{dash_port}"
    rows: list[dict] = []
    code = 1
    try:
        subprocess.run([sys.executable, "-m", "lamo_ray.collect", "reacher", "--dataset-id", "load/reacher/tiny-v0",
                        "--episodes", "20", "--ref-episodes", "5"], env=env, cwd=root, check=True,
                       capture_output=True, timeout=300)
        subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", "--num-cpus=2",
                        f"--temp-dir={root / 'ray'}", "--disable-usage-stats",
                        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                        f"--metrics-export-port={free_port()}"], env=env, check=True, capture_output=True,
                       timeout=180)
        time.sleep(5)

        def sample(phase: str) -> dict:
            row = {"phase": phase, "t_s": round(time.time() - t0), **proc_stats(tagged_pids(tag)),
                   **state_counts(env, dashboard)}
            rows.append(row)
            print(f"{row['phase']:>7} t={row['t_s']:>5}s  actors {row['alive_actors']:>3}  "
                  f"pgs {row['live_placement_groups']:>3}  processes {row['processes']:>3} "
                  f"(idle {row['idle_workers']:>2})  fds {row['fds']:>5}  rss {row['rss_mb']:>8.0f} MB", flush=True)
            return row

        t0 = time.time()
        start = sample("start")
        start_procs = per_process(tagged_pids(tag))
        path = root / "load.yaml"
        path.write_text(yaml.safe_dump(sweep_yaml(args.trials)))
        with open(root / "sweep.log", "w") as log:
            sweep = subprocess.Popen([sys.executable, "-m", "lamo_ray.sweep", str(path), "--address",
                                      f"127.0.0.1:{gcs_port}", "--set", f"storage_path={root / 'results'}"],
                                     env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
            while sweep.poll() is None:
                time.sleep(args.every)
                sample("running")
        sweep_s = time.time() - t0
        time.sleep(args.settle)
        end = sample("end")
        end_procs = per_process(tagged_pids(tag))

        # the sweep's closing table: "<trial>  <variant>  <seed>  <outcome>  <step>  <score>"
        summary = [line.split() for line in (root / "sweep.log").read_text().splitlines()]
        completed = sum(len(f) >= 4 and f[1] in ("lora", "full") and f[3] == "completed" for f in summary)
        peak = max(rows, key=lambda r: r["rss_mb"])
        print(f"\nsweep exit {sweep.returncode} in {sweep_s:.0f} s; trials completed: {completed} of {args.trials}")
        print(f"peak during the sweep: {peak['rss_mb']:.0f} MB cluster RSS, "
              f"{max(r['processes'] for r in rows)} processes, {max(r['alive_actors'] for r in rows)} actors")
        # Ray's own per-cluster pieces, not per trial: the detached singleton that Ray Train's first
        # run creates, and the log monitor, which keeps up to RAY_LOG_MONITOR_MAX_OPEN_FILES (200)
        # worker log files open by design. They are reported, and left out of the verdict.
        def growth(name: str) -> tuple[int, int, float]:
            a, b = start_procs.get(name, (0, 0, 0.0)), end_procs.get(name, (0, 0, 0.0))
            return b[0] - a[0], b[1] - a[1], b[2] - a[2]

        singleton = growth("ray::" + SINGLETON_ACTOR)
        log_monitor = growth("-u log_monitor.py")
        ours = [c for c in end["actor_classes"] if c != SINGLETON_ACTOR]
        leaks = {
            "actors still alive (besides Ray's singleton)": len(ours),
            "placement groups not removed": end["live_placement_groups"],
            "non-idle processes above start (besides the singleton)":
                (end["processes"] - end["idle_workers"]) - (start["processes"] - start["idle_workers"]) - singleton[0],
            "fds above start (besides the singleton and the log monitor)":
                end["busy_fds"] - start["busy_fds"] - singleton[1] - log_monitor[1],
            "cluster RSS growth MB (besides the singleton)": round(end["rss_mb"] - start["rss_mb"] - singleton[2]),
        }
        print(f"start -> end: processes {start['processes']} -> {end['processes']} (idle workers "
              f"{start['idle_workers']} -> {end['idle_workers']}), fds {start['fds']} -> {end['fds']}, "
              f"RSS {start['rss_mb']:.0f} -> {end['rss_mb']:.0f} MB; Ray's singleton actor: {singleton[1]} fds, "
              f"{singleton[2]:.0f} MB; log monitor: +{log_monitor[1]} fds")
        for name, value in leaks.items():
            print(f"  {name}: {value}")
        print(f"  actors alive at the end: {end['actor_classes'] or 'none'}")
        print("per process, start -> end (count / fds / RSS MB):")
        for name in sorted(set(start_procs) | set(end_procs)):
            a, b = start_procs.get(name, (0, 0, 0.0)), end_procs.get(name, (0, 0, 0.0))
            if a != b:
                print(f"  {name[:60]:60s} {a[0]}/{a[1]}/{a[2]:.0f} -> {b[0]}/{b[1]}/{b[2]:.0f}")
        values = list(leaks.values())
        leaked = (values[0] > 0 or values[1] > 0 or values[2] > 0 or values[3] > args.fd_slack
                  or values[4] > args.rss_slack)
        ok = sweep.returncode == 0 and completed == args.trials and not leaked
        print("verdict:", "no leaks" if ok else "LEAK or failure (see above)")
        code = 0 if ok else 1
    finally:
        # never `ray stop`: it stops every Ray on the machine; only this cluster's processes carry the tag
        for pid in tagged_pids(tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
