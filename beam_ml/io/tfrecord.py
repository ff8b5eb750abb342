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
from typing import Sequence

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.tfrecordio import _TFRecordUtil

__all__ = ["WriteTFRecordBatches", "frame_records"]


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
