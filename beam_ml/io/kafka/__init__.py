"""Read from and write to Kafka natively in Python (kafka-python), no Java.

Beam's own ``ReadFromKafka``/``WriteToKafka`` are Java cross-language
transforms that need an expansion service; these are plain Python transforms
that run on the DirectRunner and on Dataflow alike::

    records = (p | 'ReadFromKafka' >> ReadFromKafka(
                   'broker:9092', ['transactions'], group_id='scoring'))
    (predictions | 'WriteToKafka' >> WriteToKafka('broker:9092', 'predictions'))

Sample command line (a pipeline built on these)::

    python -m pipelines.stream_predict --bootstrap_servers=127.0.0.1:9092 \\
        --input_topic=transactions --output_topic=predictions --streaming

Modules: `read` (ReadFromKafka), `write` (WriteToKafka), `offsets` (start
positions, ranges, watermarks, partition discovery), `budget` (max_records
over every partition), `records` (KafkaRecord, timestamp policies),
`config` (client security settings), `formats` (JSON / CSV values),
`topic_batches` (a topic's events as typed Arrow batches, for training).
"""
from beam_ml.io.kafka.config import KafkaClientConfig
from beam_ml.io.kafka.offsets import (COMMITTED, EARLIEST, LATEST, list_partitions, next_watermark, probe_log_end,
                                      read_range, resolve_start_offset)
from beam_ml.io.kafka.read import ReadFromKafka
from beam_ml.io.kafka.records import TIMESTAMP_POLICIES, KafkaRecord, iter_key_values, to_key_value
from beam_ml.io.kafka.write import WriteToKafka

__all__ = [
    "COMMITTED",
    "EARLIEST",
    "LATEST",
    "KafkaClientConfig",
    "KafkaRecord",
    "TIMESTAMP_POLICIES",
    "ReadFromKafka",
    "WriteToKafka",
    "list_partitions",
    "next_watermark",
    "probe_log_end",
    "read_range",
    "resolve_start_offset",
    "to_key_value",
    "iter_key_values",
]
