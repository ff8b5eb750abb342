"""Files on local disk and on object stores (gs://) through one small API over Beam's FileSystems.

Local files are read and written with the standard library (no Beam import:
`pipelines.predict` loads a model without Beam); Beam's FileSystems are
imported on first use, by a path with a scheme, a compressed file or a glob.

    from beam_ml import fs
    fs.write_json(fs.join(output_dir, "counts.json"), {"rows_in": 10})   # output_dir: /tmp/x or gs://b/x
    counts = fs.read_json(fs.join(output_dir, "counts.json"))
    for path in fs.match("gs://b/data/*.csv"):                           # sorted, files only
        with fs.open_read(path) as f:                                    # binary; .gz etc. decompressed
            header = f.readline()
    versions = [int(n) for n in fs.list_dir(fs.join(output_dir, "model")) if n.isdigit()]

Every non-TensorFlow path of the package should go through this module, so a
path works the same whether it is local or ``gs://`` (TensorFlow's own
artifacts use ``tf.io.gfile``, which has gs:// built in). Semantics, the same
on both:

- Object stores have no directories: a "directory" is a prefix. `is_dir` is
  true when some object lies under ``path/``; `makedirs` does nothing there;
  `list_dir` of a prefix nothing lies under is ``[]``, like a missing local
  directory.
- Whole-file writes (`write_bytes`, `write_text`, `write_json`) are atomic
  where the store allows: a temporary file renamed into place on local disk,
  one object upload on GCS (an object appears complete or not at all). A
  reader never sees half a file.
- `match` expands a glob when it is called (Beam's syntax: ``*`` stops at
  ``/``, ``**`` does not, ``?`` is any one character; unlike glob.glob, ``*``
  also matches names that start with a dot) and returns files only, sorted; a
  pattern without glob characters matches itself if it is a file.
- A missing file raises FileNotFoundError naming it.

Directory renames are not offered: on GCS they are a copy and a delete per
object, never atomic; publish a directory by writing its marker file last.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from typing import Any, BinaryIO, Optional

__all__ = ["CompressionTypes", "is_local", "join", "exists", "is_file", "is_dir", "match", "size", "open_read",
           "open_write", "read_bytes", "write_bytes", "read_text", "write_text", "read_json", "write_json",
           "makedirs", "list_dir", "list_files", "delete", "delete_tree", "copy", "copy_tree", "rename"]

_GLOB_CHARS = "*?["
_COPY_BUFFER = 8 << 20
# Beam's FileSystems.URI_SCHEMA_PATTERN: a path with a scheme is not local.
_SCHEME = re.compile(r"[a-zA-Z][-a-zA-Z0-9+.]*://")


class CompressionTypes:
    """Beam's compression names (apache_beam.io.filesystem.CompressionTypes holds the same strings).

    Here so that local files need no Beam import (~1.5-4 s): Beam's FileSystems
    are imported on first use, by a path with a scheme (gs://) or a compressed
    file. The values are plain strings, interchangeable with Beam's.
    """
    AUTO = "auto"
    BZIP2 = "bzip2"
    DEFLATE = "deflate"
    ZSTD = "zstd"
    GZIP = "gzip"
    LZMA = "lzma"
    UNCOMPRESSED = "uncompressed"
    # CompressionTypes.detect_compression_type's suffixes.
    SUFFIXES = (".bz2", ".deflate", ".gz", ".zst", ".zstd", ".xz", ".lzma")


def _filesystems():
    """Beam's FileSystems, imported on first use (object stores, compressed files, globs)."""
    from apache_beam.io.filesystems import FileSystems  # deferred: Beam, not needed by local whole-file access

    return FileSystems


def _raw_local(path: str, compression: str) -> bool:
    """True when a local file is read or written byte for byte (what Beam's LocalFileSystem does without Beam)."""
    return is_local(path) and (compression == CompressionTypes.UNCOMPRESSED or (
        compression == CompressionTypes.AUTO and not path.lower().endswith(CompressionTypes.SUFFIXES)))


def is_local(path: str) -> bool:
    """True for a local path (no ``scheme://`` prefix, e.g. ``gs://``)."""
    return _SCHEME.match(path.strip()) is None


def join(base: str, *parts: str) -> str:
    """Joins path components with the separator of `base`'s filesystem (``/`` on gs://)."""
    if is_local(base):
        return os.path.join(base, *parts)  # Beam's LocalFileSystem.join
    return _filesystems().join(base, *parts)


def _scheme(path: str) -> Optional[str]:
    """``gs`` of ``gs://b/x``; None for a local path (Beam's FileSystems.get_scheme)."""
    found = _SCHEME.match(path.strip())
    return found.group(0)[:-3] if found else None


def _prefix(path: str) -> str:
    """``path`` as an object-store directory prefix: exactly one trailing ``/``."""
    return path.rstrip("/") + "/"


def _is_bucket_root(path: str) -> bool:
    """``scheme://bucket`` or ``scheme://bucket/`` (callers know `path` is not local)."""
    return path.rstrip("/").count("/") == 2


def _is_not_found(e: BaseException) -> bool:
    if isinstance(e, FileNotFoundError):
        return True
    try:
        from google.api_core.exceptions import NotFound  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - beam[gcp] brings it
        return False
    if isinstance(e, NotFound):
        return True
    # BeamIOError wraps per-path exceptions.
    return any(_is_not_found(inner) for inner in (getattr(e, "exception_details", None) or {}).values()
               if isinstance(inner, BaseException))


def is_file(path: str) -> bool:
    """True if `path` is an existing file (an object, on gs://)."""
    if is_local(path):
        return os.path.isfile(path)
    return not path.endswith("/") and not _is_bucket_root(path) and _filesystems().exists(path)


def is_dir(path: str) -> bool:
    """True if `path` is a directory: locally a real one, on gs:// a prefix some object lies under.

    A bucket root (``gs://bucket``) is a directory when the bucket exists.
    """
    if is_local(path):
        return os.path.isdir(path)
    try:
        found = _filesystems().match([_prefix(path) + "**"], limits=[1])[0].metadata_list
    except Exception as e:  # pylint: disable=broad-except
        if _is_not_found(e):
            return False
        raise
    return bool(found) or _is_bucket_root(path)


def exists(path: str) -> bool:
    """True if `path` is a file or a directory (see `is_dir`)."""
    if is_local(path):
        return os.path.exists(path)
    return is_file(path) or is_dir(path)


def _is_listed_file(path: str) -> bool:
    # Object stores list zero-byte "dir/" markers (TF's makedirs writes them);
    # local listings may name directories.
    return not path.endswith("/") and (not is_local(path) or os.path.isfile(path))


def match(pattern: str) -> list[str]:
    """The files matching a glob now, sorted.

    Args:
      pattern: a path or glob (``*`` stops at ``/``, ``**`` crosses it, ``?`` is one character).

    Returns:
      Paths of files (never directories); ``[]`` when nothing matches.
    """
    if not any(ch in pattern for ch in _GLOB_CHARS):
        return [pattern] if is_file(pattern) else []
    try:
        found = _filesystems().match([pattern])[0].metadata_list
    except Exception as e:  # pylint: disable=broad-except
        if _is_not_found(e):  # e.g. a bucket that does not exist
            return []
        raise
    return sorted(m.path for m in found if _is_listed_file(m.path))


def size(path: str) -> int:
    """Size of a file in bytes.

    Raises:
      FileNotFoundError: `path` is not a file.
    """
    if not is_file(path):
        raise FileNotFoundError(f"no such file: {path}")
    if is_local(path):
        return os.path.getsize(path)
    return int(_filesystems().get_filesystem(path).size(path))


def open_read(path: str, compression: str = CompressionTypes.AUTO) -> BinaryIO:
    """Opens a file for reading bytes (wrap in io.TextIOWrapper for text).

    Args:
      path: a local path or gs:// URL.
      compression: a ``CompressionTypes`` value; AUTO decompresses by extension
        (.gz, .bz2, .zst, .deflate...), UNCOMPRESSED reads the raw bytes.

    Raises:
      FileNotFoundError: `path` is not a file.
    """
    try:
        if _raw_local(path, compression):
            return open(path, "rb")  # what Beam's LocalFileSystem.open returns for an uncompressed file
        return _filesystems().open(path, compression_type=compression)
    except Exception as e:  # pylint: disable=broad-except
        if _is_not_found(e) or (is_local(path) and os.path.isdir(path)):
            raise FileNotFoundError(f"no such file: {path}") from e
        raise


def open_write(path: str, compression: str = CompressionTypes.AUTO,
               mime_type: str = "application/octet-stream") -> BinaryIO:
    """Opens a file for writing bytes, replacing it; local parent directories are created.

    On gs:// the object appears when the file is closed. For a small whole
    file prefer `write_bytes` (atomic on local disk too).

    Args:
      path: a local path or gs:// URL.
      compression: a ``CompressionTypes`` value; AUTO compresses by extension.
      mime_type: the object's content type on object stores.
    """
    if _raw_local(path, compression):  # Beam's LocalFileSystem.create, without Beam
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        return open(path, "wb")
    return _filesystems().create(path, mime_type=mime_type, compression_type=compression)


def read_bytes(path: str) -> bytes:
    """The raw bytes of a file (no decompression)."""
    with open_read(path, CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file atomically: readers see the old file or the new one, never a part.

    Local: a temporary file in the same directory, renamed into place. GCS: one
    object upload.
    """
    if not is_local(path):
        with open_write(path, CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file owner-only; an output file is readable like any other the user writes.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_text(path: str, encoding: str = "utf-8") -> str:
    """A whole text file (no decompression)."""
    return read_bytes(path).decode(encoding)


def write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    """Writes a whole text file atomically (see `write_bytes`)."""
    write_bytes(path, text.encode(encoding))


def read_json(path: str) -> Any:
    """Parses a JSON file.

    Raises:
      FileNotFoundError: `path` is not a file.
      json.JSONDecodeError: it is not JSON.
    """
    return json.loads(read_text(path))


def write_json(path: str, obj: Any, indent: Optional[int] = 2) -> None:
    """Writes `obj` as a JSON file atomically (see `write_bytes`), with a final newline."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def makedirs(path: str) -> None:
    """Creates a local directory and its parents (exist_ok); nothing to do on object stores."""
    if is_local(path):
        os.makedirs(path, exist_ok=True)


def list_dir(path: str) -> list[str]:
    """Names of the immediate children of a directory (files and subdirectories), sorted.

    Subdirectory names carry no trailing ``/``. A directory that does not exist
    (a prefix nothing lies under) has no children: ``[]``.
    """
    if is_local(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    prefix = _prefix(path)
    names = set()
    for child in _list_remote(prefix):
        name = child[len(prefix):].split("/", 1)[0]
        if name:
            names.add(name)
    return sorted(names)


def _list_remote(prefix: str) -> list[str]:
    """Every object path under `prefix` (markers included)."""
    try:
        return [m.path for m in _filesystems().match([prefix + "**"])[0].metadata_list]
    except Exception as e:  # pylint: disable=broad-except
        if _is_not_found(e):
            return []
        raise


def list_files(path: str) -> list[str]:
    """Every file under a directory, recursively, as full paths, sorted; ``[]`` if there is none."""
    if is_local(path):
        out = []
        for dirpath, _, files in os.walk(path):
            out.extend(os.path.join(dirpath, f) for f in files)
        return sorted(out)
    return sorted(p for p in _list_remote(_prefix(path)) if not p.endswith("/"))


def delete(path: str) -> None:
    """Deletes a file; a missing file is not an error."""
    if is_local(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    if is_file(path):
        _filesystems().delete([path])


def delete_tree(path: str) -> None:
    """Deletes a directory and everything under it (or a single file); missing is not an error."""
    if is_local(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            delete(path)
        return
    if _is_bucket_root(path):
        raise ValueError(f"delete_tree: refusing to empty a whole bucket: {path}")
    delete(path)
    if _list_remote(_prefix(path)):
        # A trailing "/" makes Beam delete every object under the prefix.
        _filesystems().delete([_prefix(path)])


def copy(src: str, dst: str) -> None:
    """Copies one file byte for byte, across filesystems too (local → gs:// and back).

    Raises:
      FileNotFoundError: `src` is not a file.
    """
    if not is_file(src):
        raise FileNotFoundError(f"no such file: {src}")
    _copy_files([src], [dst])


def copy_tree(src: str, dst: str) -> list[str]:
    """Copies every file under directory `src` to the same relative path under `dst`.

    Works across filesystems (e.g. a SavedModel written locally, published to
    gs://). Files already in `dst` and not in `src` are kept.

    Returns:
      The destination paths written, sorted.

    Raises:
      FileNotFoundError: `src` has no files.
    """
    sources = list_files(src)
    if not sources:
        raise FileNotFoundError(f"no files under: {src}")
    base = os.path.join(src, "") if is_local(src) else _prefix(src)
    destinations = []
    for s in sources:
        rel = s[len(base):]
        destinations.append(join(dst, *rel.replace(os.sep, "/").split("/")))
    _copy_files(sources, destinations)
    return sorted(destinations)


def _copy_files(sources: list[str], destinations: list[str]) -> None:
    pairs = list(zip(sources, destinations))
    same_remote = [(s, d) for s, d in pairs if not is_local(s) and _scheme(s) == _scheme(d)]
    if same_remote:
        # Server-side copies (GCS rewrite): no bytes through this process.
        _filesystems().copy([s for s, _ in same_remote], [d for _, d in same_remote])
    done = set(same_remote)
    for s, d in pairs:
        if (s, d) in done:
            continue
        if is_local(s) and is_local(d):
            os.makedirs(os.path.dirname(os.path.abspath(d)), exist_ok=True)
            shutil.copyfile(s, d)
            continue
        # Across filesystems: stream raw bytes (UNCOMPRESSED: a .gz stays a .gz).
        with open_read(s, CompressionTypes.UNCOMPRESSED) as fin, \
                open_write(d, CompressionTypes.UNCOMPRESSED) as fout:
            shutil.copyfileobj(fin, fout, _COPY_BUFFER)


def rename(src: str, dst: str) -> None:
    """Moves a file, replacing `dst`: atomic on local disk, a copy then a delete on GCS.

    Raises:
      FileNotFoundError: `src` is not a file.
    """
    if is_local(src) and is_local(dst):
        try:
            os.replace(src, dst)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no such file: {src}") from e
        return
    copy(src, dst)
    delete(src)
