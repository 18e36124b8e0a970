"""Starting ``siamsearch serve`` as a real process on 127.0.0.1 for the tests, bounded in time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

TOKEN = "test-write-token-0123456789"
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(index_dir: Path, token_file: Path | None = None, workers: int = 1, port: int | None = None,
          ) -> tuple[subprocess.Popen, str]:
    """A server process and its base URL, once it answers /readyz (or a RuntimeError with its output)."""
    port = port or free_port()
    command = [sys.executable, "-m", "siamsearch", "serve", "--index", str(index_dir), "--port", str(port),
               "--workers", str(workers)]
    if token_file is not None:
        command += ["--token-file", str(token_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {process.stdout.read().decode()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(process, signal.SIGKILL)
    raise RuntimeError(f"the server did not answer within {START_TIMEOUT_S} s")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal the server's whole process group (its workers too) and wait for it."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextmanager
def running(index_dir: Path, token_file: Path | None = None, workers: int = 1):
    process, url = start(index_dir, token_file, workers)
    try:
        yield url
    finally:
        stop(process)
