"""Processes, private PostgreSQL and Redis servers, and a TCP proxy for the fault campaign.

Everything started here is registered and torn down by `cleanup()` (called from the driver's
`finally`, its signal handlers and `atexit`), by process id only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

PG_BIN = "/usr/lib/postgresql/15/bin"
_PROCS: list[subprocess.Popen] = []
_CLEANUPS: list = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, log_path, env=None, **kw) -> subprocess.Popen:
    out = open(log_path, "ab")
    proc = subprocess.Popen(
        args,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        **kw,
    )
    out.close()
    _PROCS.append(proc)
    return proc


def stop(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout=15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL to the process itself (not a graceful stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)


def on_cleanup(fn) -> None:
    _CLEANUPS.append(fn)


def cleanup() -> None:
    for fn in reversed(_CLEANUPS):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            log(f"cleanup step failed: {e}")
    _CLEANUPS.clear()
    for proc in _PROCS:
        stop(proc, timeout=5)
    _PROCS.clear()


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a spare port (never the shared 5432)."""

    def __init__(self, workdir: str):
        self.dir = os.path.join(workdir, "pgdata")
        self.sock = os.path.join(workdir, "pgsock")
        self.logfile = os.path.join(workdir, "postgres.log")
        self.port = free_port()
        self.as_user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        for d in (self.dir, self.sock):
            os.makedirs(d, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(d, "postgres", "postgres")
        if os.geteuid() == 0:
            open(self.logfile, "a").close()
            shutil.chown(self.logfile, "postgres", "postgres")
            shutil.chown(workdir, "postgres", "postgres")
        self._run([f"{PG_BIN}/initdb", "-D", self.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        on_cleanup(self.destroy)
        self.start()

    def _run(self, args, check=True, timeout=120):
        return subprocess.run(
            self.as_user + args,
            check=check,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.dir, "-l", self.logfile, "-o", opts, "-w", "-t", "60", "start"])

    def stop(self, mode="fast") -> None:
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.dir, "-m", mode, "-w", "-t", "60", "stop"], check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str, port: int | None = None) -> str:
        return f"postgres://postgres@127.0.0.1:{port or self.port}/{db}"

    def psql(self, db: str, sql: str, timeout=120) -> str:
        out = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", db, "-c", sql],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        return out.stdout.decode()

    def create_db(self, name: str) -> None:
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{name}"')
        self.psql("postgres", f'CREATE DATABASE "{name}"')

    def drop_db(self, name: str) -> None:
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PrivateRedis:
    """A throw-away Redis with AOF on, on a spare port (never the shared 6379)."""

    def __init__(self, workdir: str):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.logfile = os.path.join(workdir, "redis.log")
        self.proc = None
        on_cleanup(self.destroy)
        self.start()

    def start(self) -> None:
        self.proc = spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--dir", self.dir, "--maxmemory-policy", "noeviction"],
            self.logfile,
        )
        if not wait_port(self.port, 20):
            raise RuntimeError("private redis did not start")

    def shutdown(self) -> None:
        """Graceful SHUTDOWN: the AOF is flushed, as in a rolling restart."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            stop(self.proc)

    def destroy(self) -> None:
        if self.proc and self.proc.poll() is None:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stop(self.proc, timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class Proxy:
    """A TCP proxy in front of PostgreSQL that can make the database unreachable.

    `partition()` freezes every open connection (no byte forwarded either way) and accepts new
    connections without ever forwarding them: the client sees a silent peer, as in a network
    partition. `heal()` closes the frozen connections and forwards new ones again.
    """

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: list[tuple[socket.socket, socket.socket | None]] = []
        self.frozen = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        on_cleanup(self.close)

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.frozen.is_set():
                with self.lock:
                    self.conns.append((client, None))
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.frozen.is_set() and not self.closed:
                    time.sleep(0.05)
                if self.closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def partition(self):
        self.frozen.set()

    def heal(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for client, server in conns:
            for s in (client, server):
                if s is not None:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        s.close()
                    except OSError:
                        pass
        self.frozen.clear()

    def close(self):
        self.closed = True
        self.heal()
        try:
            self.sock.close()
        except OSError:
            pass
