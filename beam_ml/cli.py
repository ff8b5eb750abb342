"""The shared command-line wrapper of every `python -m pipelines.<name>`.

    def main(argv=None):
        cli.main(run, argv)

A UserError (bad flag, file or spec) prints as one line `error: ...` and exits
with status 2; anything else is a bug or an infrastructure failure and keeps
its traceback. Every command is quiet unless --verbose (beam_ml.logs).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Sequence

from beam_ml import logs
from beam_ml.errors import UserError

__all__ = ["main"]


def main(run: Callable[[Sequence[str]], Any], argv: Optional[Sequence[str]] = None) -> Any:
    """Runs `run(argv)` (default: sys.argv[1:]) and turns a UserError into exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    level = logs.verbose_level(argv)
    logs.prepare(level)  # beam_ml's __init__ did for sys.argv; `argv` may differ
    logs.configure_logging(level)
    try:
        return run(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
