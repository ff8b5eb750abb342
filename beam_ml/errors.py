"""Errors a user can act on, and the dead-letter record shared by every pipeline.

A `UserError` is raised for bad flags, files and specs: the entry points print its
message on one line and exit with status 2 instead of a traceback.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

__all__ = ["UserError", "DeadLetter", "DEAD_TAG"]

# The tag of every dead-letter side output (readers, parsers, inference).
DEAD_TAG = "dead"


class UserError(Exception):
    """A problem with the user's input (flag, file, spec) that names what is wrong."""


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used, with the reason and where it came from.

    Attributes:
      source: a file path, a Kafka `topic/partition` or a BigQuery table.
      position: a line number (files, 1-based, header is line 1), a Kafka offset, or
        for BigQuery rows (which have no order) a stable fingerprint of the row's values.
      reason: what was wrong, naming the column when there is one.
      raw: the offending record as text (truncated), for inspection and replay.
      stage: the step that rejected it: 'parse', 'validate', 'sql', 'inference',
        'schema' (a row that does not fit its BigQuery table) or 'bigquery' (rejected by it).
    """

    source: str
    position: Optional[int]
    reason: str
    raw: str
    stage: str = "parse"

    MAX_RAW_CHARS = 2000

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["raw"] = d["raw"][: self.MAX_RAW_CHARS]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
