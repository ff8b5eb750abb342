"""File access through Beam's FileSystems: local paths, gs:// and every other registered scheme.

Nothing in beam_ml's readers calls open() or glob: a path or pattern that works
with Beam's text IO works here, compressed files included.

    files = match_files("gs://bucket/exports/*.csv.gz")      # [(path, size), ...]
    with open_file(files[0][0], "auto") as f:                # gzip from the extension
        head = f.read(1 << 16)
"""
from __future__ import annotations

import gzip
import lzma
import os
import zlib
from typing import BinaryIO, Optional

from beam_ml.errors import UserError

__all__ = ["match_files", "open_file", "read_head", "read_block", "resolve_compression", "is_glob",
           "DECOMPRESSION_ERRORS"]


def _decompression_errors() -> tuple:
    errors = [EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile]
    for module, name in (("isal.isal_zlib", "error"), ("zstandard", "ZstdError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


# What reading corrupt or truncated compressed data raises (not network or disk errors).
DECOMPRESSION_ERRORS = _decompression_errors()


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


class _GzipReader:
    """gzip through ISA-L (python-isal): about 3x zlib's inflate speed, which Beam's CompressedFile uses.

    ISA-L reads its input in large blocks and, on a truncated or damaged
    stream, drops the block it was decoding; the reader then re-opens the file
    with Python's gzip, skips what was already delivered and reads on, so
    every byte before the damage is returned. Closing it closes the file.
    """

    def __init__(self, open_raw):
        from isal import igzip

        self._open_raw = open_raw
        self._raw = open_raw()
        self._gz = igzip.IGzipFile(fileobj=self._raw, mode="rb")
        self._pos = 0
        self._fallback = False

    def _use_stdlib(self) -> None:
        self.close()
        self._raw = self._open_raw()
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="rb")
        self._gz.seek(self._pos)
        self._fallback = True

    def read1(self, n: int = -1) -> bytes:
        try:
            b = self._gz.read1(n)
        except DECOMPRESSION_ERRORS:
            if self._fallback:
                raise
            self._use_stdlib()
            b = self._gz.read1(n)
        self._pos += len(b)
        return b

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while True:
                b = self.read1(1 << 20)
                if not b:
                    return b"".join(parts)
                parts.append(b)
        data, err = read_block(self, n) if n else (b"", None)
        if err is not None and not data:
            raise err
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._gz.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_file(path: str, compression: str = "auto") -> BinaryIO:
    """Opens a file for reading (decompressing it); a missing file is a UserError."""
    from apache_beam.io.filesystems import FileSystems

    if _is_local_dir(path):
        raise UserError(f"--input: {path} is a directory, expected a CSV file")
    resolved = resolve_compression(path, compression)
    try:
        if resolved == "gzip":
            return _GzipReader(lambda: FileSystems.open(path, mime_type="application/octet-stream",
                                                        compression_type="uncompressed"))
        return FileSystems.open(path, mime_type="application/octet-stream", compression_type=resolved)
    except FileNotFoundError:
        raise UserError(f"--input: file not found: {path}")
    except Exception:
        if not _exists(path):
            raise UserError(f"--input: file not found: {path}")
        raise


def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.exists(path)
    except Exception:
        return False


def read_block(f: BinaryIO, n: int) -> tuple[bytes, Optional[BaseException]]:
    """Up to `n` bytes (fewer only at the end of the file), and the decompression error that stopped it.

    Reads in steps (`read1`) where the file has them, so the bytes decompressed
    before a truncated or damaged stream fails are returned, not lost.
    """
    read1 = getattr(f, "read1", None)
    parts, got = [], 0
    try:
        if read1 is None:
            return f.read(n), None
        while got < n:
            b = read1(n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
    except DECOMPRESSION_ERRORS as e:
        return b"".join(parts), e
    return b"".join(parts), None


def read_head(path: str, compression: str, nbytes: int) -> tuple[bytes, bool]:
    """The first `nbytes` (decompressed) bytes of a file, and whether that is all there is to read.

    Raises:
      UserError: when the file is missing or cannot be decompressed from its start.
    """
    with open_file(path, compression) as f:
        head, err = read_block(f, nbytes)
        if err is None:
            at_eof = len(head) < nbytes or not read_block(f, 1)[0]
        elif not head:
            raise UserError(f"--input: {path} cannot be read as {resolve_compression(path, compression)} "
                            f"data ({err}); pass --compression if its extension is misleading")
        else:
            at_eof = True  # truncated: the reader dead-letters the rest
    return head, at_eof
