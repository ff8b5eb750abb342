"""Tests of beam_ml.io.kafka* against a real (Tansu) broker on 127.0.0.1.

    python -m pytest tests/io/test_kafka.py -q

Pipelines run on the DirectRunner (which falls back to the FnApiRunner here).
"""
import json
from collections import Counter
import logging
import os
import signal
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from beam_ml.errors import UserError
from beam_ml.io.kafka import (COMMITTED, EARLIEST, LATEST, KafkaClientConfig,
                              KafkaRecord, ReadFromKafka, WriteToKafka,
                              list_partitions, next_watermark, probe_log_end,
                              read_range, resolve_start_offset, to_key_value)
from beam_ml.formats.text import (encode_csv_line, encode_json_object,
                                      parse_csv_line, parse_json_object)
from beam_ml.io.kafka.offsets import UNBOUNDED_STOP
from beam_ml.jobs.settings import kafka_client_config
from beam_ml.options import KafkaOptions
from beam_ml.testing import TansuBroker, find_free_port
from tests.test_kafka_leaks import kafka_threads, wait_for_no_new_kafka_threads


def _pipeline():
    return TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))


def _produce(bootstrap, topic, records, batched=False):
    """Sends (partition, key, value[, timestamp_ms]) tuples.

    batched=False waits for each send, so every record is its own batch;
    batched=True lingers so each partition's records share one batch (the
    case where Tansu's ListOffsets(latest) under-reports the end).
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap,
                             linger_ms=500 if batched else 0)
    try:
        futures = []
        for partition, key, value, *ts in records:
            future = producer.send(topic, key=key, value=value,
                                   partition=partition,
                                   timestamp_ms=ts[0] if ts else None)
            if batched:
                futures.append(future)
            else:
                future.get(timeout=10)
        producer.flush(timeout=10)
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)


def _read_back(bootstrap, topic, expected, timeout=15.0):
    """Everything in `topic`, read with a plain consumer (manual assignment)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _committed(bootstrap, group, topic, partitions):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p))
                for p in partitions}
    finally:
        consumer.close(autocommit=False)


def _as_tuple(record):
    return record.partition, record.offset, record.key, record.value


# --------------------------------------------------------------------------
# Pure pieces.


class TestStartAndRange:

    @pytest.mark.parametrize("start, kwargs, expected", [
        (COMMITTED, dict(beginning=0, committed=7), 7),
        (COMMITTED, dict(beginning=3, committed=None), 3),
        # Retention removed the committed offset: resume at the oldest kept.
        (COMMITTED, dict(beginning=10, committed=4), 10),
        (COMMITTED, dict(beginning=0, end=5, committed=9), 5),
        (EARLIEST, dict(beginning=2, end=9, committed=7), 2),
        (LATEST, dict(beginning=2, end=9), 9),
        (1_700_000_000_000, dict(beginning=0, end=9, time_offset=4), 4),
        # No record at or after the time: start at the end (only new ones).
        (1_700_000_000_000, dict(beginning=0, end=9, time_offset=None), 9),
    ])
    def test_resolve_start_offset(self, start, kwargs, expected):
        assert resolve_start_offset(start, **kwargs) == expected

    def test_resolve_start_offset_errors(self):
        with pytest.raises(ValueError, match="log end"):
            resolve_start_offset(LATEST, beginning=0)
        with pytest.raises(ValueError, match="unknown start"):
            resolve_start_offset("newest", beginning=0, end=1)

    def test_read_range(self):
        assert read_range(5, 20) == OffsetRange(5, 20)
        assert read_range(5) == OffsetRange(5, UNBOUNDED_STOP)
        assert read_range(5, None, max_records=3) == OffsetRange(5, 8)
        assert read_range(5, 7, max_records=3) == OffsetRange(5, 7)
        # A committed offset past a snapshot end gives an empty range.
        assert read_range(9, 4) == OffsetRange(9, 9)


class TestWatermark:

    def test_records_advance_it(self):
        wm = next_watermark(None, [1_000, 3_000, 2_000])
        assert wm == Timestamp(3)

    def test_never_goes_back(self):
        assert next_watermark(Timestamp(10), [2_000]) == Timestamp(10)
        assert next_watermark(Timestamp(10), [], now=12.0,
                              idle_slack=5) == Timestamp(10)

    def test_idle_partition_follows_wall_time(self):
        assert next_watermark(Timestamp(10), [], now=100.0,
                              idle_slack=5) == Timestamp(95)

    def test_busy_poll_is_not_idle_and_bad_timestamps_are_ignored(self):
        assert next_watermark(None, [-1], now=100.0) == MIN_TIMESTAMP
        assert next_watermark(None, []) == MIN_TIMESTAMP


def test_kafka_record_coder_is_a_deterministic_row_coder():
    coder = beam.coders.registry.get_coder(KafkaRecord)
    assert isinstance(coder, beam.coders.RowCoder)
    assert coder.is_deterministic()
    for record in (KafkaRecord(b"k", b"v", "t", 3, 2**40, 1_700_000_000_000),
                   KafkaRecord(None, None, "t", 0, 0, -1, "processing_time")):
        assert coder.decode(coder.encode(record)) == record


class TestToKeyValue:

    def test_shapes(self):
        assert to_key_value(b"v") == (None, b"v")
        assert to_key_value((b"k", b"v")) == (b"k", b"v")
        assert to_key_value((None, None)) == (None, None)
        record = KafkaRecord(b"k", b"v", "t", 0, 1, 2)
        assert to_key_value(record) == (b"k", b"v")

    @pytest.mark.parametrize("bad", ["text", (b"k", "v"), (1, b"v"), [b"v"],
                                     {"a": 1}])
    def test_rejects_other_shapes(self, bad):
        with pytest.raises(TypeError, match="WriteToKafka expects"):
            to_key_value(bad)


class TestFormats:

    def test_json_round_trip(self):
        row = {"amount": 12.5, "name": "Zoë", "tags": [1, 2], "none": None}
        data = encode_json_object(row)
        assert data == '{"amount":12.5,"name":"Zoë","tags":[1,2],"none":null}'.encode()
        assert parse_json_object(data) == row

    @pytest.mark.parametrize("data, reason", [
        (b'{"a": 1', "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got a JSON list"),
        (b"\xff{}", "not UTF-8"),
        (None, "tombstone"),
    ])
    def test_json_parse_errors(self, data, reason):
        with pytest.raises(ValueError, match=reason):
            parse_json_object(data)

    def test_json_encode_errors(self):
        with pytest.raises(ValueError, match="cannot encode"):
            encode_json_object({"x": float("nan")})
        with pytest.raises(ValueError, match="cannot encode"):
            encode_json_object({"x": object()})
        with pytest.raises(ValueError, match="expected a mapping"):
            encode_json_object([1])

    def test_csv_round_trip(self):
        columns = ["id", "note", "amount"]
        row = {"id": 7, "note": 'says "hi", twice', "amount": 1.5,
               "extra": "not written"}
        data = encode_csv_line(row, columns)
        assert data == b'7,"says ""hi"", twice",1.5'
        assert parse_csv_line(data + b"\r\n", columns) == {
            "id": "7", "note": 'says "hi", twice', "amount": "1.5"}
        assert encode_csv_line({"id": None, "note": "", "amount": 0},
                               columns) == b",,0"

    def test_csv_errors(self):
        with pytest.raises(ValueError, match=r"expected 2 fields \(a, b\), got 3"):
            parse_csv_line(b"1,2,3", ["a", "b"])
        with pytest.raises(ValueError, match="no value for column"):
            encode_csv_line({"a": 1}, ["a", "b"])
        with pytest.raises(ValueError, match="not a finite number"):
            encode_csv_line({"a": float("inf")}, ["a"])
        with pytest.raises(ValueError, match="not UTF-8"):
            parse_csv_line(b"\xfe,1", ["a", "b"])


# --------------------------------------------------------------------------
# Client configuration and its redaction.

_SECRET = "s3cr3t-Pa55"


class TestClientConfig:

    def test_properties_file_with_jaas(self, tmp_path):
        ca = tmp_path / "ca.pem"
        ca.write_text("-----BEGIN CERTIFICATE-----\n")
        props = tmp_path / "client.properties"
        props.write_text(
            "# from the platform team\n"
            "bootstrap.servers=b1:9093,b2:9093\n"
            "security.protocol=SASL_SSL\n"
            "sasl.mechanism=SCRAM-SHA-512\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram."
            "ScramLoginModule \\\n"
            f"    required username=\"svc\" password=\"{_SECRET}\";\n"
            f"ssl.ca.location={ca}\n"
            "session.timeout.ms=45000\n")
        config = KafkaClientConfig.load(str(props)).validate()
        assert config.client_kwargs() == {
            "bootstrap_servers": ["b1:9093", "b2:9093"],
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "svc",
            "sasl_plain_password": _SECRET,
            "ssl_cafile": str(ca),
        }

    def test_json_file_and_explicit_values_win(self, tmp_path):
        path = tmp_path / "kafka.json"
        path.write_text(json.dumps({
            "bootstrap_servers": "file:9092",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "u",
            "sasl_plain_password": _SECRET}))
        config = KafkaClientConfig.load(str(path),
                                        bootstrap_servers="flag:9092",
                                        sasl_mechanism=None).validate()
        assert config.bootstrap_servers == "flag:9092"
        assert config.sasl_mechanism == "PLAIN"

    def test_secrets_never_shown(self, tmp_path, caplog):
        props = tmp_path / "c.properties"
        props.write_text(f"sasl.password={_SECRET}\n"
                         f"some.unknown.key={_SECRET}\n")
        with caplog.at_level(logging.DEBUG):
            config = KafkaClientConfig.load(
                str(props), bootstrap_servers="h:1",
                security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                sasl_plain_username="u", ssl_password=_SECRET).validate()
            logging.getLogger("test").info("config: %s %r", config, config)
        shown = " ".join([repr(config), str(config), str(config.redacted()),
                          caplog.text])
        assert _SECRET not in shown
        assert "sasl_plain_password='***'" in repr(config)
        assert config.redacted()["ssl_password"] == "***"
        assert "some.unknown.key" in caplog.text  # the key is named...
        assert config.client_kwargs()["sasl_plain_password"] == _SECRET

    def test_validation_names_the_flag(self, tmp_path):
        def config(*flags):
            return kafka_client_config(PipelineOptions(list(flags)))

        assert config("--bootstrap_servers=h:1").bootstrap_servers == "h:1"
        # Beam's (and Kafka's) default broker address when nothing sets one.
        assert config().bootstrap_servers == "localhost:9092"
        with pytest.raises(UserError, match="--bootstrap_servers: expected"):
            config("--bootstrap_servers=nohostport")
        with pytest.raises(UserError, match="--sasl_mechanism"):
            config("--bootstrap_servers=h:1", "--security_protocol=SASL_SSL")
        with pytest.raises(UserError, match="--sasl_password is required"):
            config("--bootstrap_servers=h:1", "--security_protocol=SASL_SSL",
                   "--sasl_mechanism=PLAIN", "--sasl_username=u")
        with pytest.raises(UserError, match="--ssl_cafile: file not found"):
            config("--bootstrap_servers=h:1", "--ssl_cafile=/nonexistent.pem")
        with pytest.raises(UserError, match="--sasl_username is set but"):
            config("--bootstrap_servers=h:1", "--sasl_username=u")
        props = tmp_path / "k.properties"
        props.write_text("bootstrap.servers=f:1\nsecurity.protocol=SASL_SSL\n")
        with pytest.raises(UserError,
                           match=r"--sasl_mechanism \(or sasl_mechanism in "
                           r"--kafka_config"):
            config(f"--kafka_config={props}")

    def test_file_brokers_win_over_the_default_and_flags_over_the_file(self, tmp_path):
        props = tmp_path / "k.properties"
        props.write_text("bootstrap.servers=f:1\n")
        config = lambda *flags: kafka_client_config(PipelineOptions(list(flags)))  # noqa: E731
        assert config(f"--kafka_config={props}").bootstrap_servers == "f:1"
        assert config(f"--kafka_config={props}", "--bootstrap_servers=h:2").bootstrap_servers == "h:2"

    def test_a_missing_truststore_is_named_by_its_key(self, tmp_path):
        # JKS stores are converted (tests/test_kafka_secure.py); a missing one is named.
        props = tmp_path / "java.properties"
        props.write_text("ssl.truststore.location=/etc/ts.jks\n")
        with pytest.raises(ValueError, match="ssl.truststore.location: cannot read /etc/ts.jks"):
            KafkaClientConfig.from_file(str(props))

    def test_options_coexist_with_beams_own_flags(self):
        # Beam 2.77 already defines --bootstrap_servers (Kafka Streams runner).
        options = PipelineOptions(["--bootstrap_servers=h:1", "--sasl_username=u"])
        assert options.get_all_options()["bootstrap_servers"] == "h:1"
        assert options.view_as(KafkaOptions).sasl_username == "u"


class TestTransformArguments:

    def test_read_arguments_are_checked_early(self):
        with pytest.raises(ValueError, match="start"):
            ReadFromKafka("h:1", "t", start="newest")
        with pytest.raises(ValueError, match="topics"):
            ReadFromKafka("h:1", [])
        with pytest.raises(ValueError, match="needs a group_id"):
            ReadFromKafka("h:1", "t", commit_offsets=True)
        with pytest.raises(ValueError, match="unknown kafka-python settings"):
            ReadFromKafka("h:1", "t", consumer_config={"no_such_setting": 1})
        with pytest.raises(ValueError, match="set by the transform"):
            ReadFromKafka("h:1", "t", consumer_config={"group_id": "g"})
        with pytest.raises(ValueError, match="bootstrap_servers is required"):
            ReadFromKafka(None, "t")

    def test_write_arguments_are_checked_early(self):
        with pytest.raises(ValueError, match="exactly one of topic"):
            WriteToKafka("h:1")
        with pytest.raises(ValueError, match="unknown kafka-python settings"):
            WriteToKafka("h:1", "t", producer_config={"nope": 1})


# --------------------------------------------------------------------------
# Against the broker.


@pytest.mark.integration
class TestBrokerQueries:

    def test_list_partitions(self, kafka_broker, new_topic):
        a, b = new_topic(3), new_topic(1)
        consumer = KafkaConsumer(bootstrap_servers=kafka_broker)
        try:
            assert list_partitions(consumer, [b, a]) == [
                TopicPartition(b, 0), TopicPartition(a, 0),
                TopicPartition(a, 1), TopicPartition(a, 2)]
            with pytest.raises(ValueError, match="'missing-topic' not found"):
                list_partitions(consumer, ["missing-topic"], timeout=0.5)
        finally:
            consumer.close()

    def test_probe_finds_the_real_end_after_batched_sends(
            self, kafka_broker, new_topic):
        topic = new_topic(2)
        _produce(kafka_broker, topic,
                 [(0, None, b"single-%d" % i) for i in range(10)])
        _produce(kafka_broker, topic,
                 [(0, None, b"batched-%d" % i) for i in range(10)] +
                 [(1, None, b"batched-%d" % i) for i in range(5)],
                 batched=True)
        consumer = KafkaConsumer(bootstrap_servers=kafka_broker,
                                 fetch_max_wait_ms=100)
        try:
            tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            reported = consumer.end_offsets(tps)
            assert probe_log_end(consumer, tps) == {tps[0]: 20, tps[1]: 5}
        finally:
            consumer.close()
        # Documents the broker quirk the probe exists for (Tansu 0.6.0); on a
        # real Kafka both would be the true end.
        assert reported[tps[0]] <= 20 and reported[tps[1]] <= 5


@pytest.mark.integration
class TestReadFromKafka:

    def test_bounded_read_gets_every_record_exactly_once(
            self, kafka_broker, new_topic):
        topic = new_topic(3)
        singles = [(i % 3, b"k%d" % i, b"s%d" % i) for i in range(9)]
        batched = [(i % 3, None, b"b%d" % i) for i in range(30)]
        _produce(kafka_broker, topic, singles)
        _produce(kafka_broker, topic, batched, batched=True)
        expected = []
        for partition in range(3):
            rows = [r for r in singles + batched if r[0] == partition]
            expected += [(partition, offset, key, value)
                         for offset, (_, key, value) in enumerate(rows)]

        with _pipeline() as p:
            records = p | "ReadFromKafka" >> ReadFromKafka(
                kafka_broker, topic, bounded=True)
            assert_that(records | beam.Map(_as_tuple), equal_to(expected))

    def test_start_at_a_timestamp_inside_a_batch(self, kafka_broker, new_topic):
        topic = new_topic(1)
        base = int(time.time() * 1000) - 60_000
        _produce(kafka_broker, topic,
                 [(0, None, b"v%d" % i, base + 10 * i) for i in range(10)],
                 batched=True)
        with _pipeline() as p:
            records = p | ReadFromKafka(kafka_broker, topic, bounded=True,
                                        start=base + 45)
            assert_that(records | beam.Map(lambda r: (r.offset, r.timestamp)),
                        equal_to([(i, base + 10 * i) for i in range(5, 10)]))

    def test_latest_skips_existing_records(self, kafka_broker, new_topic):
        topic = new_topic(1)
        _produce(kafka_broker, topic, [(0, None, b"old%d" % i) for i in range(8)],
                 batched=True)
        # The same unbounded read from the earliest offset sees all of them...
        with _pipeline() as p:
            records = p | "Earliest" >> ReadFromKafka(kafka_broker, topic, start=EARLIEST,
                                                      max_read_time=2)
            assert_that(records | beam.Map(lambda r: r.value),
                        equal_to([b"old%d" % i for i in range(8)]))
        # ...so reading none from the latest offset means they were skipped.
        started = time.monotonic()
        with _pipeline() as p:
            records = p | ReadFromKafka(kafka_broker, topic, start=LATEST,
                                        max_read_time=2)
            assert_that(records, equal_to([]))
        assert time.monotonic() - started < 30

    def test_unbounded_read_stops_at_max_records_in_total(self, kafka_broker, new_topic):
        topic = new_topic(2)
        _produce(kafka_broker, topic,
                 [(i % 2, None, b"v%d" % i) for i in range(20)], batched=True)
        started = time.monotonic()
        with _pipeline() as p:
            # max_read_time only guards against a hang if this regresses.
            records = p | ReadFromKafka(kafka_broker, topic, max_records=8,
                                        max_read_time=60)
            # 8 in total, split evenly over the two partitions' backlogs.
            assert_that(records | beam.Map(lambda r: (r.partition, r.offset)),
                        equal_to([(p, o) for p in range(2) for o in range(4)]))
        assert time.monotonic() - started < 30

    def test_a_topic_holding_exactly_max_records_ends_once_they_are_read(
            self, kafka_broker, new_topic):
        """Skewed over 4 partitions (7, 1, 0, 2): every record once, and the read ends by itself."""
        topic = new_topic(4)
        spread = [0] * 7 + [1] + [3] * 2
        _produce(kafka_broker, topic, [(part, None, b"v%d" % i) for i, part in enumerate(spread)],
                 batched=True)
        started = time.monotonic()
        with _pipeline() as p:
            records = p | ReadFromKafka(kafka_broker, topic, max_records=len(spread), max_read_time=120,
                                        batches=True)
            assert_that(records | beam.FlatMap(lambda batch: [r.value for r in batch]),
                        equal_to([b"v%d" % i for i in range(len(spread))]))
        assert time.monotonic() - started < 40, "the read waited for records beyond max_records"

    def test_records_still_to_come_are_shared_by_every_partition(self, kafka_broker, new_topic):
        """2 records at launch, max_records=6: the other 4 are whichever arrive first, on any partition."""
        topic = new_topic(3)
        _produce(kafka_broker, topic, [(0, None, b"first"), (1, None, b"second")])

        class ProduceMoreOnFirst(beam.DoFn):
            def process(self, record):
                if record.value == b"first":
                    _produce(kafka_broker, topic, [(i % 3, None, b"late%d" % i) for i in range(9)])
                yield record

        started = time.monotonic()
        with _pipeline() as p:
            records = (p | ReadFromKafka(kafka_broker, topic, max_records=6, max_read_time=120)
                       | beam.ParDo(ProduceMoreOnFirst()))

            def check(values):
                assert len(values) == 6 and len(set(values)) == 6, values
                assert {b"first", b"second"} <= set(values), values

            assert_that(records | beam.Map(lambda r: r.value), check)
        assert time.monotonic() - started < 60, "the read did not end when the shared budget was used up"

    def test_batches_are_one_partition_in_offset_order(self, kafka_broker, new_topic):
        topic = new_topic(2)
        _produce(kafka_broker, topic, [(i % 2, None, b"v%d" % i) for i in range(40)], batched=True)
        with _pipeline() as p:
            batches = p | ReadFromKafka(kafka_broker, topic, bounded=True, batches=True,
                                        consumer_config={"max_poll_records": 7})
            shape = batches | beam.Map(lambda b: (len({r.partition for r in b}) == 1 and 0 < len(b) <= 7,
                                                  [r.offset for r in b] == sorted(r.offset for r in b)))
            assert_that(shape | beam.Distinct(), equal_to([(True, True)]), label="Shape")
            assert_that(batches | beam.FlatMap(lambda b: [(r.partition, r.offset) for r in b]),
                        equal_to([(p, o) for p in range(2) for o in range(20)]), label="Records")

    @pytest.mark.slow
    def test_two_worker_processes_read_every_record_across_checkpoints(self, kafka_broker, new_topic, tmp_path):
        """--direct_running_mode=multi_processing --direct_num_workers=2: two processes, every record once.

        Short checkpoints and a slow consumer force many rounds: Beam 2.77's
        parallel workers dropped checkpoint residuals (the read ended early)
        until beam_ml.io.sdf.keep_checkpoints_with_parallel_workers.
        """
        topic = new_topic(4)
        _produce(kafka_broker, topic, [(i % 4, None, b"v%d" % i) for i in range(2000)], batched=True)
        seen_dir = str(tmp_path)

        def note(batch):
            time.sleep(0.02)  # slower than the read: checkpoints happen mid-topic
            with open(os.path.join(seen_dir, str(os.getpid())), "a") as f:
                f.write("".join(f"{r.partition} {r.offset}\n" for r in batch))
            return batch

        options = PipelineOptions(["--runner=DirectRunner", "--streaming", "--direct_running_mode=multi_processing",
                                   "--direct_num_workers=2"])
        with TestPipeline(options=options) as p:
            _ = (p | ReadFromKafka(kafka_broker, topic, max_records=2000, max_read_time=120, batches=True,
                                   checkpoint_interval=0.1, consumer_config={"max_poll_records": 50})
                 | beam.Map(note))
        seen = {}
        for name in os.listdir(seen_dir):
            with open(os.path.join(seen_dir, name)) as f:
                seen[name] = f.read().split()
        assert len(seen) == 2, "two worker processes"
        pairs = [tuple(map(int, x)) for lines in seen.values() for x in zip(lines[::2], lines[1::2])]
        assert sorted(pairs) == [(p, o) for p in range(4) for o in range(500)]

    @pytest.mark.parametrize("policy", ["create_time", "processing_time", "log_append_time"])
    def test_timestamp_policy(self, kafka_broker, new_topic, policy):
        from beam_ml.metrics import READ, query_counter

        topic = new_topic(1)
        old = int(time.time() * 1000) - 3_600_000
        _produce(kafka_broker, topic, [(0, None, b"v%d" % i, old + i) for i in range(3)])
        started = int(time.time() * 1000)

        def check(got):
            got = sorted(got)
            assert [g[0] for g in got] == [0, 1, 2]
            for offset, ts, kind, event_ms in got:
                assert ts == event_ms  # the element's event time is the record's timestamp
                if policy == "create_time":
                    assert (ts, kind) == (old + offset, "create_time")
                else:
                    # Tansu topics use create time: under log_append_time every record falls
                    # back to the processing time, visibly (its type and a counter).
                    assert kind == "processing_time" and ts >= started

        p = _pipeline()
        records = p | ReadFromKafka(kafka_broker, topic, bounded=True, timestamp_policy=policy)
        assert_that(records | beam.Map(lambda r, ts=beam.DoFn.TimestampParam: (
            r.offset, r.timestamp, r.timestamp_type, int(ts.micros // 1000))), check)
        result = p.run()
        result.wait_until_finish()
        assert query_counter(result, READ, "timestamp_fallbacks") == (3 if policy == "log_append_time" else 0)

    def test_missing_topic_fails_with_its_name(self, kafka_broker):
        with pytest.raises(Exception, match="'no-such-topic' not found"):
            with _pipeline() as p:
                _ = p | ReadFromKafka(kafka_broker, "no-such-topic",
                                      bounded=True, metadata_timeout=1)


def _produce_once_committed(bootstrap, group, topic, offset, timeout=15.0):
    """Waits until partition 0 of `topic` has `offset` committed, then appends.

    If commits only happened when the pipeline ends, this never fires and the
    record it would add is missing from the read.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _committed(bootstrap, group, topic, [0])[0] == offset:
            _produce(bootstrap, topic, [(0, None, b"after-commit")])
            return
        time.sleep(0.1)


class _CommittedWhenProcessed(beam.DoFn):
    """Tags each record with its group's committed offset at that moment."""

    def __init__(self, bootstrap, group):
        self._bootstrap = bootstrap
        self._group = group

    def setup(self):
        self._consumer = KafkaConsumer(bootstrap_servers=self._bootstrap,
                                       group_id=self._group,
                                       enable_auto_commit=False)

    def process(self, record):
        committed = self._consumer.committed(
            TopicPartition(record.topic, record.partition))
        if record.value == b"a0":
            threading.Thread(
                target=_produce_once_committed,
                args=(self._bootstrap, self._group, record.topic, 5),
                daemon=True).start()
        yield record.partition, record.offset, record.value, committed

    def teardown(self):
        self._consumer.close(autocommit=False)


@pytest.mark.integration
class TestOffsetCommits:

    def test_commits_after_each_bundle_and_resumes_there(
            self, kafka_broker, new_topic):
        topic, group = new_topic(2), "group-commits"
        _produce(kafka_broker, topic,
                 [(0, None, b"a%d" % i) for i in range(5)] +
                 [(1, None, b"b%d" % i) for i in range(3)], batched=True)
        assert _committed(kafka_broker, group, topic, [0, 1]) == {0: None,
                                                                  1: None}

        with _pipeline() as p:
            seen = (p
                    | ReadFromKafka(kafka_broker, topic, group_id=group,
                                    max_read_time=6)
                    | beam.ParDo(_CommittedWhenProcessed(kafka_broker, group)))

            def check(rows):
                assert sorted(r[:3] for r in rows) == sorted(
                    [(0, o, b"a%d" % o) for o in range(5)] +
                    [(0, 5, b"after-commit")] +
                    [(1, o, b"b%d" % o) for o in range(3)]), rows
                for partition, offset, _, committed in rows:
                    # Never committed before the record was processed...
                    assert committed is None or committed <= offset, rows
                # ...but committed once its bundle finished, mid-pipeline.
                assert [r[3] for r in rows if r[2] == b"after-commit"] == [5]

            assert_that(seen, check)

        assert _committed(kafka_broker, group, topic, [0, 1]) == {0: 6, 1: 3}

        _produce(kafka_broker, topic,
                 [(0, None, b"new-a"), (1, None, b"new-b"), (1, None, b"new-c")])
        with _pipeline() as p:
            records = p | ReadFromKafka(kafka_broker, topic, group_id=group,
                                        start=COMMITTED, max_read_time=3)
            assert_that(records | beam.Map(_as_tuple), equal_to([
                (0, 6, None, b"new-a"), (1, 3, None, b"new-b"),
                (1, 4, None, b"new-c")]))
        assert _committed(kafka_broker, group, topic, [0, 1]) == {0: 7, 1: 5}

    def test_no_commits_without_a_group(self, kafka_broker, new_topic):
        topic = new_topic(1)
        _produce(kafka_broker, topic, [(0, None, b"v")])
        with _pipeline() as p:
            records = p | ReadFromKafka(kafka_broker, topic, bounded=True)
            assert_that(records | beam.Map(lambda r: r.value), equal_to([b"v"]))
        assert _committed(kafka_broker, "any-group", topic, [0]) == {0: None}


@pytest.mark.integration
class TestWriteToKafka:

    def test_written_records_read_back_with_keys(self, kafka_broker, new_topic):
        topic, dead_letters = new_topic(2), new_topic(1)
        elements = ([(b"key%d" % i, b"value%d" % i) for i in range(20)] +
                    [b"no-key-%d" % i for i in range(5)] + [(b"bad", b"!")])

        with _pipeline() as p:
            _ = (p
                 | beam.Create(elements)
                 | "WriteToKafka" >> WriteToKafka(
                     kafka_broker,
                     topic_fn=lambda e: dead_letters if e == (b"bad", b"!")
                     else topic))

        written = _read_back(kafka_broker, topic, expected=25)
        assert Counter((r.key, r.value) for r in written) == Counter(
            [(b"key%d" % i, b"value%d" % i) for i in range(20)] +
            [(None, b"no-key-%d" % i) for i in range(5)])
        assert {r.partition for r in written} == {0, 1}
        assert [(r.key, r.value) for r in _read_back(
            kafka_broker, dead_letters, expected=1)] == [(b"bad", b"!")]

    def test_unreachable_broker_fails_the_pipeline(self):
        port = find_free_port()
        started = time.monotonic()
        with pytest.raises(Exception, match="cannot connect to Kafka"):
            with _pipeline() as p:
                _ = (p | beam.Create([b"v"])
                     | WriteToKafka(f"127.0.0.1:{port}", "t", producer_config={
                         "bootstrap_timeout_ms": 2000, "max_block_ms": 2000,
                         "request_timeout_ms": 2000}))
        assert time.monotonic() - started < 30

    def test_invalid_topic_fails_the_pipeline(self, kafka_broker):
        with pytest.raises(Exception, match="illegal"):
            with _pipeline() as p:
                _ = (p | beam.Create([b"v"])
                     | WriteToKafka(kafka_broker, "not a valid topic!"))

    @pytest.mark.slow
    def test_unacknowledged_sends_fail_the_bundle(self):
        """The broker dies before the bundle's records are acknowledged."""
        threads = kafka_threads()
        with TansuBroker() as broker:
            bootstrap, pid = broker.bootstrap_servers, broker.pid
            broker.create_topic("doomed", 1)

            def kill_broker_after(unused):
                # With linger_ms the records wait in the producer's buffer, so
                # the broker is gone before they are sent: only the futures
                # checked at finish_bundle can report the loss.
                yield from (b"record %d" % i for i in range(3))
                os.kill(pid, signal.SIGKILL)

            started = time.monotonic()
            with pytest.raises(Exception, match="a send failed"):
                with _pipeline() as p:
                    _ = (p
                         | beam.Create([None])
                         | beam.FlatMap(kill_broker_after)
                         | WriteToKafka(bootstrap, "doomed", producer_config={
                             "linger_ms": 2000,
                             "request_timeout_ms": 1000,
                             "delivery_timeout_ms": 4000,
                             "reconnect_backoff_max_ms": 200}))
            assert time.monotonic() - started < 40
        # Its producer is closed for certain, not left retrying the dead broker (issue 20).
        assert wait_for_no_new_kafka_threads(threads) == set()
