"""A private Redis Cluster (3 masters, 3 replicas) for the cluster-failover scenario, started and
stopped with deploy/local/redis-cluster.sh on spare ports (each port + 10000 free too, for the
cluster bus). Registered with infra's cleanup, so it goes away on any exit; nodes are signalled
by the pids in their own pid files only."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

from infra import log, on_cleanup


def _free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_ports(n: int = 6) -> list[int]:
    """Ports below the ephemeral range whose bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = random.randint(12000, 19999)
        if p not in ports and _free(p) and _free(p + 10000):
            ports.append(p)
    return ports


class PrivateRedisCluster:
    def __init__(self, workdir: str, root: str):
        self.dir = os.path.join(workdir, "redis-cluster")
        self.script = os.path.join(root, "deploy", "local", "redis-cluster.sh")
        self.ports = cluster_ports()
        self.started = False
        on_cleanup(self.stop)

    def _script(self, *args, timeout=180):
        out = subprocess.run(["bash", self.script, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cluster.sh {args[0]} failed: {out.stdout.decode(errors='replace')[-600:]}")

    def start(self) -> None:
        self._script("start", self.dir, *map(str, self.ports))
        self.started = True
        log(f"private Redis Cluster on {self.ports}")

    def stop(self) -> None:
        if self.started:
            self._script("stop", self.dir, timeout=60)
            self.started = False

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}"

    def seeds(self) -> str:
        """REDIS_URL naming every node, so that any of them may die."""
        return ",".join(self.url(p) for p in self.ports)

    def cli(self, port: int, *args) -> str:
        try:
            out = subprocess.run(["redis-cli", "-p", str(port), *map(str, args)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, timeout=10)
            return out.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            return ""

    def owner(self, key: str) -> int | None:
        """The master serving `key`'s slot: the node that answers XLEN instead of MOVED."""
        for p in self.ports:
            if self.cli(p, "XLEN", key).strip().isdigit():
                return p
        return None

    def kill(self, port: int) -> None:
        pidfile = os.path.join(self.dir, str(port), "redis.pid")
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGKILL)
        os.remove(pidfile)

    def restart(self, port: int) -> None:
        self._script("restart", self.dir, str(port), timeout=60)

    def wait_promoted(self, key: str, dead: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.owner(key)
            if p is not None and p != dead and "cluster_state:ok" in self.cli(p, "CLUSTER", "INFO"):
                return p
            time.sleep(0.1)
        return None

    def wait_synced(self, port: int, timeout: float) -> bool:
        """The restarted node is a replica again, in sync with its master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "master_link_status:up" in self.cli(port, "INFO", "replication"):
                return True
            time.sleep(0.2)
        return False

    def fail_over_twice(self, key, at, rows, publishing, stalls, fault_log, notes) -> tuple[int, int]:
        """The stream's master SIGKILLed at 30% and 70% of the run (`at(fraction)` waits for that
        moment); after each promotion the dead node is started again (it rejoins as a replica), so
        that the second kill also has a replica to promote. `rows()` counts the stored orders;
        each stall (kill to the first order stored after the promotion) goes to `stalls`, when
        `publishing()` says events were still arriving at the kill (else there may be nothing
        left to store, and no stall to measure). Returns (kills, restarts)."""
        kills = restarts = 0
        for frac in (0.3, 0.7):
            t = at(frac)
            measurable = publishing()
            owner = self.owner(key)
            killed = time.monotonic()
            self.kill(owner)
            kills += 1
            promoted = self.wait_promoted(key, owner, 60)
            promoted_s = time.monotonic() - killed
            if promoted is None:
                notes.append(f"no replica of {owner} promoted within 60 s")
                break
            rows_then = rows()
            stall = None
            while measurable and time.monotonic() - killed < 120:
                if rows() > rows_then:
                    stall = time.monotonic() - killed
                    break
                time.sleep(0.1)
            if measurable:
                stalls.append(stall)
            else:
                notes.append(f"kill at {t}s came after the last publish: no stall measured")
            self.restart(owner)
            restarts += 1
            synced = self.wait_synced(owner, 60)
            stalled = ""
            if measurable:
                stalled = (f"orders stored again {stall:.1f}s after the kill; " if stall is not None
                           else "orders never stored again within 120 s; ")
            fault_log.append(
                f"stream's master {owner} SIGKILLed at {t}s, replica {promoted} promoted {promoted_s:.1f}s later, "
                f"{stalled}{owner} restarted as a replica{'' if synced else ' (not in sync within 60 s)'}")
        return kills, restarts
