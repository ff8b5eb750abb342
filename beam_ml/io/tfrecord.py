"""Writes TFRecord files from batches of serialized records (one element per batch).

    encoded_batches | WriteTFRecordBatches("out/data/train", file_name_suffix=".tfrecord")

Beam's WriteToTFRecord takes one element per record; after tf.Transform each
element is already a whole RecordBatch, so unbatching 200k examples only to
write them one by one costs more than encoding them. This sink keeps Beam's
file-based-sink semantics (temp files, atomic finalization, sharding) and
frames each record exactly as TFRecord does (length, masked CRC32C, data, CRC).
"""
from __future__ import annotations

import struct
import uuid
from typing import Sequence

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.transforms.window import GlobalWindows

from beam_ml import fs

__all__ = ["WriteTFRecordBatches", "WriteSplitTFRecordBatches", "frame_records"]


def frame_records(records: Sequence[bytes]) -> bytes:
    """The TFRecord framing of `records`, concatenated."""
    crc = _TFRecordUtil._masked_crc32c
    parts = []
    for value in records:
        length = struct.pack("<Q", len(value))
        parts += [length, struct.pack("<I", crc(length)), value, struct.pack("<I", crc(value))]
    return b"".join(parts)


class _TFRecordBatchSink(filebasedsink.FileBasedSink):
    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int):
        super().__init__(file_path_prefix, coder=coders.BytesCoder(), file_name_suffix=file_name_suffix,
                         num_shards=num_shards, mime_type="application/octet-stream",
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def write_record(self, file_handle, value: Sequence[bytes]):
        file_handle.write(frame_records(value))


class WriteTFRecordBatches(beam.PTransform):
    """Writes PCollection[list[bytes]] as TFRecord files, every record of every batch.

    Args:
      file_path_prefix: output path prefix; shards are named like Beam's.
      file_name_suffix: e.g. ".tfrecord".
      num_shards: 0 lets the runner decide.
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str = "", num_shards: int = 0):
        super().__init__()
        self._sink = _TFRecordBatchSink(file_path_prefix, file_name_suffix, num_shards)

    def expand(self, pcoll):
        return pcoll | beam.io.Write(self._sink)


class _WriteSplitBundlesFn(beam.DoFn):
    """(split, list[bytes]) -> one temporary TFRecord file per split and bundle; (split, path) at bundle end."""

    def __init__(self, temp_dir: str):
        self._temp_dir = temp_dir
        self._files: dict = {}

    def start_bundle(self):
        self._files = {}

    def process(self, element):
        split, records = element
        if split not in self._files:
            path = fs.join(self._temp_dir, f"{split}-{uuid.uuid4().hex}.tfrecord")
            self._files[split] = (path, fs.open_write(path, compression=CompressionTypes.UNCOMPRESSED))
        self._files[split][1].write(frame_records(records))

    def finish_bundle(self):
        files, self._files = self._files, {}
        for split, (path, handle) in files.items():
            handle.close()
            yield GlobalWindows.windowed_value((split, path))


def _finalize_splits(_, temp_files, prefixes: dict, suffix: str, temp_dir: str) -> list[str]:
    """Renames each bundle's temporary file to <prefix>-<i>-of-<n><suffix>, split by split; returns the names.

    Only files of bundles that committed are listed (a retried bundle's orphans
    stay in `temp_dir`, which is removed here). A split with no rows gets one
    empty file, as Beam's file sinks write.
    """
    by_split: dict = {split: [] for split in prefixes}
    for split, path in temp_files:
        by_split[split].append(path)
    written = []
    for split, prefix in prefixes.items():
        paths = sorted(by_split[split])
        n = max(len(paths), 1)
        for stale in fs.match(f"{prefix}-*{suffix}"):  # an earlier run's shards of this split
            fs.delete(stale)
        if not paths:
            empty = f"{prefix}-00000-of-00001{suffix}"
            fs.write_bytes(empty, b"")
            written.append(empty)
        for i, path in enumerate(paths):
            final = f"{prefix}-{i:05d}-of-{n:05d}{suffix}"
            fs.rename(path, final)
            written.append(final)
    fs.delete_tree(temp_dir)
    return written


class WriteSplitTFRecordBatches(beam.PTransform):
    """Writes PCollection[(split, list[bytes])] as TFRecord files, one set of shards per split, in ONE sink.

    Beam's file sink is several stages per output; a run that writes a test split
    and k folds would pay them k+1 times. Here every split is written by one
    step (a temporary file per split and bundle) and finalized by one step that
    renames the files of committed bundles (atomic per file on local disk):

        written = tagged | WriteSplitTFRecordBatches({"fold0": "out/data/fold-0", "test": "out/data/test"},
                                                     temp_dir="out/tmp/tfrecords", file_name_suffix=".tfrecord")

    Returns:
      A PCollection of the final file names.
    """

    def __init__(self, prefixes: dict, temp_dir: str, file_name_suffix: str = ".tfrecord"):
        super().__init__()
        self._prefixes = dict(prefixes)
        self._temp_dir = temp_dir
        self._suffix = file_name_suffix

    def expand(self, pcoll):
        from apache_beam.pvalue import AsList  # pylint: disable=import-outside-toplevel

        temp_files = pcoll | "WriteBundles" >> beam.ParDo(_WriteSplitBundlesFn(self._temp_dir))
        return (pcoll.pipeline
                | "Start" >> beam.Create([None])
                | "Finalize" >> beam.Map(_finalize_splits, temp_files=AsList(temp_files), prefixes=self._prefixes,
                                         suffix=self._suffix, temp_dir=self._temp_dir)
                | "FileNames" >> beam.FlatMap(lambda names: names))
