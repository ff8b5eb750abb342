"""File access through Beam's FileSystems: local paths, gs:// and every other registered scheme.

Nothing in beam_ml's readers calls open() or glob: a path or pattern that works
with Beam's text IO works here, compressed files included.

    files = match_files("gs://bucket/exports/*.csv.gz")      # [(path, size), ...]
    with open_file(files[0][0], "auto") as f:                # gzip from the extension
        head = f.read(1 << 16)
"""
from __future__ import annotations

import os
from typing import BinaryIO

from beam_ml.errors import UserError

__all__ = ["match_files", "open_file", "read_head", "resolve_compression", "is_glob"]


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def resolve_compression(path: str, compression: str = "auto") -> str:
    """The compression of `path`: the given one, or from the extension for 'auto'."""
    from apache_beam.io.filesystem import CompressionTypes

    if compression in (None, "", "auto"):
        return CompressionTypes.detect_compression_type(path)
    return compression


def _is_local_dir(path: str) -> bool:
    return "://" not in path and os.path.isdir(path)


def match_files(pattern: str, flag: str = "--input") -> list[tuple[str, int]]:
    """(path, size in bytes) of the files a path or glob names, empty ones included.

    Raises:
      UserError: naming the flag, when nothing matches or a plain path is a directory.
    """
    from apache_beam.io.filesystems import FileSystems

    try:
        result = FileSystems.match([pattern])[0]
    except Exception as e:  # BeamIOError, bad scheme, permission: all a problem with the flag
        raise UserError(f"{flag}: cannot list {pattern}: {e}".splitlines()[0])
    files = sorted((m.path, m.size_in_bytes) for m in result.metadata_list
                   if not m.path.endswith("/") and not _is_local_dir(m.path))
    if not files:
        if not is_glob(pattern) and _is_local_dir(pattern):
            raise UserError(f"{flag}: {pattern} is a directory, expected a CSV file or a glob")
        raise UserError(f"{flag}: file not found: {pattern}" if not is_glob(pattern)
                        else f"{flag}: no file matches {pattern}")
    return files


def open_file(path: str, compression: str = "auto") -> BinaryIO:
    """Opens a file for reading (decompressing it); a missing file is a UserError."""
    from apache_beam.io.filesystems import FileSystems

    if _is_local_dir(path):
        raise UserError(f"--input: {path} is a directory, expected a CSV file")
    try:
        return FileSystems.open(path, mime_type="application/octet-stream",
                                compression_type=resolve_compression(path, compression))
    except FileNotFoundError:
        raise UserError(f"--input: file not found: {path}")
    except Exception as e:
        if not _exists(path):
            raise UserError(f"--input: file not found: {path}")
        raise


def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.exists(path)
    except Exception:
        return False


def read_head(path: str, compression: str, nbytes: int) -> tuple[bytes, bool]:
    """The first `nbytes` (decompressed) bytes of a file, and whether that is the whole file."""
    with open_file(path, compression) as f:
        head = _read_exactly(f, nbytes)
        at_eof = len(head) < nbytes or not f.read(1)
    return head, at_eof


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)
