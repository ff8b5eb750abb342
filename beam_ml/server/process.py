"""A model server in a subprocess on 127.0.0.1, and a small blocking JSON client: for tests and benchmarks.

    with ServerProcess(["-m", "pipelines.serve", "--model_dir=out/fraud"]) as server:
        server.wait_ready()
        status, body = server.predict([{"V1": 0.3}])
        code = server.stop()             # SIGTERM: drains, exit status 0
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Optional, Sequence

from beam_ml.testing.process import find_free_port

__all__ = ["ServerProcess"]


class ServerProcess:
    """`python <args> --host=127.0.0.1 --port=P` as a subprocess (stdout+stderr kept), with a JSON client."""

    def __init__(self, args: Sequence[str], env: Optional[dict] = None, port: Optional[int] = None,
                 cwd: Optional[str] = None, add_port: bool = True):
        """Args:
          args: the interpreter's arguments (e.g. ["-m", "pipelines.serve", "--model_dir=..."]).
          env: variables added to this process's environment.
          port: the port (default: a free one).
          cwd: the working directory (default: the current one).
          add_port: append --host=127.0.0.1 --port=P (False when the environment chooses the port).
        """
        self.port = port or find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, *args] + (["--host=127.0.0.1", f"--port={self.port}"] if add_port else [])
        self.proc = subprocess.Popen(argv, cwd=cwd, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()

    def wait_ready(self, path: str = "/v1/models/model", timeout: float = 180) -> None:
        """Until `path` answers 200 with a loaded model (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.proc.stdout.read().decode()[-2000:]}")
            try:
                status, body = self.request("GET", path, timeout=5)
                if status == 200 and "LOADING" not in json.dumps(body):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server on port {self.port} not ready after {timeout} s")

    def request(self, method: str, path: str, body: Any = None, content_type: Optional[str] = "application/json",
                raw: Optional[bytes] = None, timeout: float = 60) -> tuple[int, Any]:
        """(status, parsed JSON body, or text when not JSON)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type and data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, text, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        return status, (json.loads(text) if "json" in ctype else text.decode("utf-8", "replace"))

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def predict(self, instances: list, path: str = "/v1/models/model:predict") -> tuple[int, Any]:
        return self.request("POST", path, {"instances": instances})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signals the server and waits; returns its exit status (killed, and raises, after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def output(self) -> str:
        """What the server printed (once it has exited)."""
        return self.proc.stdout.read().decode("utf-8", "replace") if self.proc.poll() is not None else ""
