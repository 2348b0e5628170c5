"""A real two-node Ray cluster on 127.0.0.1: a head node and a worker node, each its own `ray start --block`
process group, with bounded CPUs and memory. Only meaningful inside a network namespace that has nothing but
loopback (tests/test_ray_two_nodes.py starts the namespace): Ray also listens on and advertises the machine's interface
address, and there is none there."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from uis import free_port

HOST = "127.0.0.1"
IN_NETNS = "FTLAB_IN_RAY_NETNS"  # set inside the namespace by whatever started it
NODE_MEMORY = 3 * 2**30
OBJECT_STORE = 200 * 2**20


def netns_unavailable() -> str | None:
    """Why a private network namespace cannot be made here (None: it can)."""
    try:
        probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cannot run `unshare -n` ({error})"
    if probe.returncode != 0:
        return f"`unshare -n` failed (it needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


def in_loopback_netns(command: list[str]) -> list[str]:
    """`command` run inside a new network namespace whose only interface, loopback, is up (run it with IN_NETNS=1
    in its environment)."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


@dataclass
class RayNode:
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL every process of the node at once: `ray start`, its raylet and agents, and the raylet's worker
        processes, which leave the process group (a node lost, not stopped)."""
        import psutil

        if self.process.poll() is not None:
            return
        processes = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class TwoNodeCluster:
    root: Path
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    head: RayNode | None = None
    worker: RayNode | None = None

    @property
    def address(self) -> str:
        """The GCS address (what ray.init and train.ray.address take)."""
        return f"{HOST}:{self.port}"

    @property
    def jobs_address(self) -> str:
        """The job server (what dagster-ray's executor submits steps to)."""
        return f"http://{HOST}:{self.dashboard_port}"

    def env(self) -> dict:
        bin_dir = str(Path(sys.executable).parent)
        return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, name: str, args: list[str]) -> RayNode:
        log = self.root / f"{name}.log"
        command = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--node-ip-address", HOST,
                   "--num-cpus", "1", "--memory", str(NODE_MEMORY), "--object-store-memory", str(OBJECT_STORE),
                   "--disable-usage-stats", *args]
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                       start_new_session=True, cwd=self.root)
        return RayNode(process, log)

    def start(self) -> TwoNodeCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        # Ray's unix sockets live under --temp-dir, and their paths may not exceed 107 bytes: a short dir of its own.
        self.ray_temp = Path(tempfile.mkdtemp(prefix="ftlab-ray-", dir="/tmp"))
        self.head = self._start("head", ["--head", "--port", str(self.port), "--temp-dir", str(self.ray_temp),
                                         "--include-dashboard=true", "--dashboard-host", HOST,
                                         "--dashboard-port", str(self.dashboard_port)])
        self.wait_for_nodes(1)
        self.start_worker()
        return self

    def start_worker(self, wait: bool = True) -> None:
        """Start the worker node; with `wait`, until it has joined (a new node id: a killed node may still be
        listed). Without, a Ray Train run that needs its CPU waits for it anyway (its placement group)."""
        known = {n["id"] for n in self.alive_nodes()} if wait else set()
        self.worker = self._start("worker", ["--address", self.address])
        if wait:
            self.wait_for_nodes(2, new_besides=known)

    def alive_nodes(self) -> list[dict]:
        """The cluster's live nodes, seen from this process (a Ray driver once the head answers)."""
        import ray

        if not ray.is_initialized():
            with socket.socket() as probe:
                if probe.connect_ex((HOST, self.port)) != 0:
                    return []
            ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        return [{"id": n["NodeID"], "head": "node:__internal_head__" in n.get("Resources", {})}
                for n in ray.nodes() if n["Alive"]]

    def wait_for_nodes(self, count: int, deadline_s: float = 90, new_besides: set[str] = frozenset()) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for node in (self.head, self.worker):
                if node is not None and node.process.poll() is not None:
                    raise RuntimeError(f"ray start exited {node.process.returncode}:\n{node.log.read_text()[-3000:]}")
            alive = {n["id"] for n in self.alive_nodes()}
            if len(alive) >= count and alive - new_besides:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the Ray cluster did not reach {count} live nodes in {deadline_s} s")

    def stop_head(self) -> None:
        import ray

        ray.shutdown()
        self.head.kill()

    def stop(self) -> None:
        import ray

        ray.shutdown()
        for node in (self.worker, self.head):
            if node is not None:
                node.kill()
        shutil.rmtree(self.ray_temp, ignore_errors=True)
