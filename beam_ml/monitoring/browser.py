"""Headless chromium (Debian's /usr/bin/chromium) for the monitor's pages: screenshots and console errors.

    shot = screenshot("file:///tmp/drift.html", "drift.png")     # Screenshot(returncode, console_errors, stderr)
    dom = dump_dom("http://127.0.0.1:8080/")                      # the DOM after the scripts ran
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from typing import Optional

__all__ = ["chromium", "Screenshot", "screenshot", "dump_dom"]

# No network beyond the page itself, no first-run work, a private profile.
_QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclasses.dataclass
class Screenshot:
    returncode: int
    console_errors: list
    stderr: str


def _run(args: list, timeout: float) -> subprocess.CompletedProcess:
    binary = chromium()
    if binary is None:
        raise RuntimeError("--screenshot: chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([binary, *_QUIET, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def screenshot(url: str, png: str, width: int = 1280, height: int = 1500, wait_ms: int = 4000,
               timeout: float = 120) -> Screenshot:
    """Loads `url`, lets its scripts run for `wait_ms` (virtual time), writes a PNG; reports console errors."""
    run = _run(["--enable-logging=stderr", "--v=0", f"--window-size={width},{height}",
                f"--virtual-time-budget={wait_ms}", f"--screenshot={png}", url], timeout)
    errors = [line for line in run.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    return Screenshot(run.returncode, errors, run.stderr[-3000:])


def dump_dom(url: str, wait_ms: int = 4000, timeout: float = 120) -> str:
    """The page's DOM after its scripts ran for `wait_ms` (virtual time)."""
    run = _run([f"--virtual-time-budget={wait_ms}", "--dump-dom", url], timeout)
    if run.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom {url} failed: {run.stderr[-1000:]}")
    return run.stdout
