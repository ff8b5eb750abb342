"""A server subprocess on 127.0.0.1 for tests and demos: started, waited for, stopped.

The Tansu broker, the GCS emulator (and its TLS proxy) and the BigQuery
emulator are all run the same way: a subprocess whose output goes to a
temporary file (a pipe nobody reads while tests run would fill up and block
the server), polled until it answers or exits, retried on a fresh free port
when the port it was given was taken meanwhile, and stopped with SIGTERM,
then SIGKILL. Subclasses say how to launch one attempt and when it is ready.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import tempfile
import time
from typing import Any, Optional

__all__ = ["ThrowawayServer", "accepts_connections", "find_free_port", "start_module", "HOST"]

_LOGGER = logging.getLogger(__name__)
HOST = "127.0.0.1"


def find_free_port(host: str = HOST) -> int:
    """Returns a TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_module(module: str, argv, log_path, cwd: str) -> tuple[subprocess.Popen, Any]:
    """Starts `python -m module *argv` in `cwd` (on its PYTHONPATH), stdout and stderr to `log_path`.

    Returns (the process, the open log file: the caller closes it once the process is done).
    """
    import sys

    env = dict(os.environ, PYTHONPATH=cwd + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    log = open(log_path, "w")  # pylint: disable=consider-using-with
    return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT), log


def accepts_connections(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port succeeds within half a second."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ThrowawayServer:
    """Base of the throwaway servers: subclasses implement `_launch` and `_ready`.

    Args:
      name: what the server is called in log lines and errors.
      startup_timeout: seconds one attempt may take to become ready.
      attempts: launches tried before giving up (a free port can be taken
        between picking it and the server binding it).
      poll_seconds: the wait between readiness checks.
    """

    def __init__(self, name: str, startup_timeout: float, attempts: int = 3, poll_seconds: float = 0.05) -> None:
        self.name = name
        self._startup_timeout = startup_timeout
        self._attempts = attempts
        self._poll_seconds = poll_seconds
        self._process: Optional[subprocess.Popen] = None
        self._log = None

    # ---- what subclasses provide
    def _launch(self) -> tuple[list[str], dict[str, Any]]:
        """Picks this attempt's ports (and scratch state) and returns (argv, extra Popen kwargs)."""
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _where(self) -> str:
        """Where the server listens, for messages."""
        raise NotImplementedError

    def _worth_retrying(self, log: str, timed_out: bool) -> bool:
        """Whether a failed attempt should be retried on new ports."""
        return True

    def _stopped(self) -> None:
        """Clears what one attempt set up (ports, scratch directories)."""

    # ---- the shared life cycle
    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    def start(self):
        """Starts the server and waits until it is ready.

        Returns:
          self.

        Raises:
          RuntimeError: it exited or was not ready within the start-up timeout
            (on every attempt); the message carries the end of its log.
        """
        if self._process is not None:
            raise RuntimeError(f"the {self.name} is already running")
        for attempt in range(self._attempts):
            argv, kwargs = self._launch()
            self._log = tempfile.TemporaryFile()
            self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                             stderr=subprocess.STDOUT, **kwargs)
            deadline = time.monotonic() + self._startup_timeout
            while time.monotonic() < deadline and self._process.poll() is None:
                if self._ready():
                    _LOGGER.info("%s (pid %d) listening on %s", self.name, self._process.pid, self._where())
                    return self
                time.sleep(self._poll_seconds)
            log, timed_out, where = self.log_tail(), self._process.poll() is None, self._where()
            self.stop()
            if attempt + 1 == self._attempts or not self._worth_retrying(log, timed_out):
                raise RuntimeError(f"the {self.name} did not start on {where} within "
                                   f"{self._startup_timeout:.0f}s; its log ends with:\n{log}")
        raise AssertionError("unreachable")

    def log_tail(self, limit: int = 3000) -> str:
        """The end of the server's log (empty once stopped)."""
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, self._log.tell() - limit))
        return self._log.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the server: SIGTERM, then SIGKILL after `timeout` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._stopped()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
