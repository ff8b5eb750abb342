"""pytest fixtures: a real GCS API on 127.0.0.1 (emulator + TLS proxy for TensorFlow), loaded by conftest.py.

    def test_x(gcs_root):           # "gs://<fresh bucket>", with the environment set for this test
        fs.write_text(gcs_root + "/a.txt", "hi")

- `local_gcs`: one `beam_ml.testing.gcs.LocalGcs` for the session (about 0.5 s to start).
- `gcs_environ`: sets its variables in os.environ for one test (restored after), so
  this process, Beam's worker processes and subprocesses all reach the emulator,
  and TensorFlow's gs:// goes through the proxy.
- `gcs_bucket` / `gcs_root`: a fresh, empty bucket per test.
"""
from __future__ import annotations

import os

import pytest

from beam_ml.testing.gcs import STATIC_ENVIRON, LocalGcs

# google.auth reads the metadata host when it is imported, which happens while
# tests are collected: set these now so nothing ever probes the cloud metadata
# server (they change nothing for tests that do not use Google clients).
for _name, _value in STATIC_ENVIRON.items():
    os.environ.setdefault(_name, _value)
# TensorFlow's GCS filesystem reads its cache settings once, when a process first uses
# gs://, whichever test that is: off for the whole session, or a later test may read an
# object's old length after Beam rewrote it.
for _name in ("GCS_STAT_CACHE_MAX_AGE", "GCS_MATCHING_PATHS_CACHE_MAX_AGE", "GCS_READ_CACHE_MAX_SIZE_MB"):
    os.environ.setdefault(_name, "0")


@pytest.fixture(scope="session")
def local_gcs(tmp_path_factory) -> LocalGcs:
    """The emulator and the TLS proxy, started once per session."""
    with LocalGcs(workdir=str(tmp_path_factory.mktemp("gcs"))) as gcs:
        yield gcs


@pytest.fixture
def gcs_environ(local_gcs, monkeypatch) -> dict:
    """The local GCS variables, set in os.environ for this test (children inherit them)."""
    for name, value in local_gcs.environ.items():
        monkeypatch.setenv(name, value)
    return dict(local_gcs.environ)


@pytest.fixture
def gcs_bucket(local_gcs, gcs_environ) -> str:
    """The name of a new, empty bucket for this test."""
    return local_gcs.new_bucket()


@pytest.fixture
def gcs_root(gcs_bucket) -> str:
    """``gs://<a new, empty bucket>``, with the environment set."""
    return f"gs://{gcs_bucket}"
