"""A real Redis server for the tests (Debian's ``redis-server``, installed by .ci/run): loopback
only, no persistence, bounded memory with least-recently-used eviction, as the manifests run it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from pefm.local.runtime import free_port


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server (.ci/run does)")
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru", "--dir", str(self.folder)]
        log = (self.folder / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {log.name}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: gone at once, as a crashed server is."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)
