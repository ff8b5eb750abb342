"""Training with --features_sql from a topic snapshot (arrival order: offsets) and from a BigQuery table (arrival
order: event time): the features the job's source computes equal the in-process definition, row by row; train
stores the statement and counts every record."""
import json
import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.errors import DEAD_TAG
from beam_ml.features import FeaturePlan
from beam_ml.features.cards import CARD_FEATURES_SQL, card_events
from beam_ml.features.csv_source import add_features
from beam_ml.features.sources import (FeatureTableSource, FeatureTopicSource, events_schema_for_rows,
                                      in_event_time_order, rows_as_events)
from beam_ml.io.kafka.topic_batches import position_code, sample_topic
from beam_ml.jobs.bigquery import bigquery_input
from beam_ml.jobs.features import plan_records_training_features
from beam_ml.jobs.settings import kafka_client_config

FEATURE_FLAGS = [f"--features_sql={CARD_FEATURES_SQL}", "--event_time_column=ts"]
INFER = dict(label="Class", positive_label=None, task=None, key=None, drop=[])


def _features(row: dict) -> tuple:
    return tuple(np.float32(row[n]).item() for n in ("tx_10m", "amount_10m", "max_10m"))


def _layout_features(batch) -> list:
    cols = [batch.column(n).to_pylist() for n in ("__line__", "tx_10m", "amount_10m", "max_10m")]
    return [(line, (a[0], b[0], c[0])) for line, a, b, c in zip(*cols)]


def test_event_time_order_and_typing_of_records():
    rows = [{"card_id": "a", "ts": 30, "Amount": "2.5"}, {"card_id": "b", "ts": None, "Amount": 1},
            {"card_id": "a", "ts": "1970-01-01T00:00:00.010Z", "Amount": None}]
    events = events_schema_for_rows(rows)
    assert [f.type for f in events] == [pa.string(), pa.string(), pa.float64(), pa.int64()]
    plan = FeaturePlan.parse(CARD_FEATURES_SQL, "ts", ["card_id", "ts", "Amount"])
    table = in_event_time_order(plan, rows_as_events(rows, events))
    assert table.column("__line__").to_pylist() == [2, 0, 1]  # 10 ms, 30 ms, then the unreadable time
    assert table.column("Amount").to_pylist() == [None, 2.5, 1.0]


@pytest.mark.integration
@pytest.mark.slow
def test_training_from_a_topic_computes_features_in_offset_order(kafka_broker, new_topic, tmp_path):
    from kafka import KafkaProducer

    from pipelines import train
    rows = card_events(1500, cards=30, seed=12)
    topic = new_topic(partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    where = {}  # row index -> (partition, offset)
    futures = []
    for i, r in enumerate(rows):  # a card's events in one partition, in their order
        part = int(r["card_id"][1:]) % 3
        futures.append((i, producer.send(topic, json.dumps(r).encode(), key=r["card_id"].encode(), partition=part)))
    futures.append((None, producer.send(topic, b"not json", partition=0)))  # dead-lettered by the read
    producer.flush()
    for i, f in futures:
        meta = f.get(timeout=30)
        if i is not None:
            where[i] = position_code(meta.partition, meta.offset)
    producer.close()
    plan = FeaturePlan.parse(CARD_FEATURES_SQL, "ts", list(rows[0]))
    expected = [(where[i], _features(r)) for i, r in enumerate(add_features(plan, pa.Table.from_pylist(rows))
                                                                .to_pylist())]
    options = PipelineOptions([f"--bootstrap_servers={kafka_broker}", *FEATURE_FLAGS])
    kafka = kafka_client_config(options)
    tf = plan_records_training_features(options, sample_topic(kafka.client_kwargs(), topic), f"topic {topic}", None,
                                        INFER)
    assert tf.spec.features["sql"] == CARD_FEATURES_SQL
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        out = p | FeatureTopicSource(kafka, topic, tf.spec, tf.plan, tf.events_schema)
        assert_that(out["rows"] | beam.FlatMap(_layout_features), equal_to(expected), label="features")
        assert_that(out[DEAD_TAG] | beam.Map(lambda d: d.source), equal_to([f"{topic}/0"]), label="dead")
    assert sum(f[0] > 0 for _, f in expected) > 100
    run = train.run([f"--input_topic={topic}", f"--bootstrap_servers={kafka_broker}", "--label=Class",
                     f"--output_dir={tmp_path / 'out'}", "--preprocess_only", "--runner=DirectRunner", "--verbose=0",
                     *FEATURE_FLAGS])
    assert (run.counts["rows_in"], run.counts["rows_good"], run.counts["rows_dead"]) == (1501, 1500, 1), run.counts
    spec = json.load(open(run.spec_path))
    assert spec["features"] == {"sql": CARD_FEATURES_SQL, "event_time_column": "ts"}
    roles = {c["name"]: c["role"] for c in spec["columns"]}
    assert roles["tx_10m"] == "numeric" and roles["card_id"] == "drop" and roles["ts"] == "drop"


def _load_cards(client, table_id, rows):
    from google.cloud import bigquery

    schema = [bigquery.SchemaField("card_id", "STRING"), bigquery.SchemaField("ts", "INT64"),
              bigquery.SchemaField("Amount", "FLOAT64"), bigquery.SchemaField("V1", "FLOAT64"),
              bigquery.SchemaField("Class", "INT64")]
    client.create_table(bigquery.Table(table_id, schema=schema))
    for i in range(0, len(rows), 500):
        assert client.insert_rows_json(table_id, rows[i:i + 500], retry=None) == []


@pytest.mark.integration
@pytest.mark.slow
def test_training_from_a_table_computes_features_in_event_time_order(bigquery_emulator, bq_dataset, tmp_path):
    from pipelines import train
    rows = card_events(1200, cards=25, seed=13)
    shuffled = list(rows)
    random.Random(0).shuffle(shuffled)  # a table has no order: the job must not depend on the insert order
    _load_cards(bq_dataset.client, bq_dataset.table_id("cards"), shuffled)
    plan = FeaturePlan.parse(CARD_FEATURES_SQL, "ts", list(rows[0]))
    # card_events are in event-time order; events at one time never feed each other, so ties need no order
    want = sorted(_features(r) + (r["card_id"], r["ts"]) for r in add_features(plan, pa.Table.from_pylist(rows))
                  .to_pylist())
    flags = [f"--bigquery_endpoint={bigquery_emulator.endpoint}",
             f"--bigquery_storage_endpoint={bigquery_emulator.grpc_endpoint}"]
    table = bq_dataset.table("cards")
    options = PipelineOptions([f"--input_table={table}", *flags, *FEATURE_FLAGS])
    bigquery = bigquery_input(options, table, None)
    tf = plan_records_training_features(options, bigquery.sample()[1], table, None, INFER, by_event_time=True)
    # the layout drops card_id and ts (roles 'drop'): keep them as numeric to check each row's identity
    spec = tf.spec
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        out = p | FeatureTableSource(bigquery, spec, tf.plan, tf.events_schema)
        got = out["rows"] | beam.FlatMap(lambda b: [f for _, f in _layout_features(b)])
        assert_that(got, equal_to([w[:3] for w in want]), label="features")
        assert_that(out[DEAD_TAG], equal_to([]), label="dead")
    assert sum(w[0] > 0 for w in want) > 100
    run = train.run([f"--input_table={table}", "--label=Class", f"--output_dir={tmp_path / 'out'}",
                     "--preprocess_only", "--runner=DirectRunner", "--verbose=0", *flags, *FEATURE_FLAGS])
    assert (run.counts["rows_in"], run.counts["rows_good"], run.counts["rows_dead"]) == (1200, 1200, 0), run.counts
    assert json.load(open(run.spec_path))["features"]["sql"] == CARD_FEATURES_SQL
