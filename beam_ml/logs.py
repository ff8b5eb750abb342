"""How much a command prints: quiet by default (progress lines, a summary, where outputs are); --verbose: the rest.

    prepare(verbose_level())      # beam_ml/__init__.py, before anything can import TensorFlow
    configure_logging(level)      # beam_ml.cli, once the command line is known

Quiet hides what TensorFlow, absl and Beam print for their own developers:
TensorFlow's C++ logs (the oneDNN and CUDA-driver notes it prints while it
loads, `failed call to cuInit ... (303)` on machines without a GPU), Python
warnings of the tensorflow and absl loggers, and Beam's INFO logs; Keras'
per-epoch lines follow the same --verbose flag (beam_ml.training.trial).
TensorFlow reads its C++ log level once, when it loads, so `prepare` runs in
beam_ml's __init__ (every process, Beam's worker processes included, imports
beam_ml before its DoFns import TensorFlow) and hands the level on to
subprocesses in BEAM_ML_VERBOSE. A variable the user set (TF_CPP_MIN_LOG_LEVEL)
is left alone.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
from typing import Iterator, Optional, Sequence

__all__ = ["VERBOSE_ENV", "verbose_level", "prepare", "configure_logging"]

VERBOSE_ENV = "BEAM_ML_VERBOSE"
_LEVELS = ("0", "1", "2")
# What TensorFlow's shared libraries print while they load, before any log level applies
# (absl logs to stderr until it is initialized): notes, not problems.
_LOAD_NOTES = ("All log messages before absl::InitializeLog() is called",
               "oneDNN custom operations are on",
               "Could not find cuda drivers on your machine",
               "cpu_feature_guard.cc",
               "To enable the following instructions:")
# Python loggers whose warnings are for developers of the libraries, not users of a command.
_LIBRARY_LOGGERS = ("tensorflow", "absl", "apache_beam")
_set_log_level = False  # whether prepare() set TF_CPP_MIN_LOG_LEVEL (and may take it back)


def verbose_level(argv: Optional[Sequence[str]] = None) -> int:
    """The --verbose level of a command line: 0 without the flag, 2 for a bare --verbose.

    Args:
      argv: the command line; None: sys.argv, and when that has no --verbose, BEAM_ML_VERBOSE
        (what the process that started this one decided, e.g. for Beam's worker processes).
    """
    if argv is not None:
        return _flag_level(argv) or 0
    level = _flag_level(sys.argv[1:])
    if level is None:
        inherited = os.environ.get(VERBOSE_ENV)
        level = int(inherited) if inherited in _LEVELS else 0
    return level


def _flag_level(args: Sequence[str]) -> Optional[int]:
    level = None
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--verbose":
            following = args[i + 1] if i + 1 < len(args) else ""
            level = int(following) if following in _LEVELS else 2
        elif arg.startswith("--verbose=") and arg[len("--verbose="):] in _LEVELS:
            level = int(arg[len("--verbose="):])
    return level


def prepare(level: int) -> None:
    """Sets what must be set before TensorFlow loads, for this process and the processes it starts.

    Quiet (level 0): TensorFlow's C++ logs off (TF_CPP_MIN_LOG_LEVEL=3, unless the user set it) and
    its load-time notes filtered out of stderr; any other line it prints while loading still shows.
    A level above 0 undoes that, as long as TensorFlow has not loaded yet.
    """
    global _set_log_level
    os.environ[VERBOSE_ENV] = str(level)
    if "tensorflow" in sys.modules:
        return
    hooks = [f for f in sys.meta_path if isinstance(f, _QuietTensorFlowImport)]
    if level:
        for hook in hooks:
            sys.meta_path.remove(hook)
        if _set_log_level:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
            _set_log_level = False
        return
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        _set_log_level = True
    if not hooks:
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def configure_logging(level: int) -> None:
    """Python logging for a command: library warnings off when quiet; with --verbose, INFO and up (Beam's too)."""
    os.environ[VERBOSE_ENV] = str(level)
    if level:
        root = logging.getLogger()
        root.filters = [f for f in root.filters if not isinstance(f, _LibraryRecords)]
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
        logging.getLogger().setLevel(logging.INFO)
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(f, _LibraryRecords) for f in root.filters):
        root.filters.append(_LibraryRecords())


class _LibraryRecords(logging.Filter):
    """Drops what the libraries log below ERROR straight to the root logger (Beam's RunInference:
    `WARNING:root:Resource module is not available...`), which no logger name can silence."""

    _PACKAGES = tuple(f"{os.sep}{name}{os.sep}" for name in _LIBRARY_LOGGERS)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not any(p in record.pathname for p in self._PACKAGES)


@contextlib.contextmanager
def _load_notes_filtered() -> Iterator[None]:
    """Sends file descriptor 2 to a file while the block runs, then writes back every line but _LOAD_NOTES."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(note in line for note in _LOAD_NOTES)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _FilteredLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` with its load-time notes filtered, then steps aside."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            with _load_notes_filtered():
                self._loader.exec_module(module)
        finally:
            module.__loader__ = module.__spec__.loader = self._loader


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, the first time it is imported, and wraps its loader in _FilteredLoader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders locate it, and later imports are plain
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec
