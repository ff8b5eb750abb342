"""Every kind of Kafka pipeline over a secured listener, end to end, and no password in anything it leaves.

    python -m pytest tests/test_kafka_secure_pipelines.py -q

A representative subset of the matrix (tests/test_kafka_secure.py checks every
protocol x mechanism at the connection level): produce and stream_predict over
SASL_SSL SCRAM-SHA-512 (a Confluent-style client.properties, a password file),
the predictions read back by librdkafka (confluent-kafka) over SASL_SSL; train
--input_topic over mutual TLS with an encrypted key; produce and batch_predict
over a topic over SSL; kafka_to_bigquery with Google's template parameters
(SASL_PLAIN = SASL_SSL + PLAIN, a JKS truststore, secrets from a file and an
environment variable); a `kafka:` lookup over SASL_PLAINTEXT; the Dataflow
staging of a secured stream_predict. Each run's logs (DEBUG for the kafka
loggers), printed output, output files and displayed options are searched for
the passwords.
"""
import json
import logging
import os
import uuid

import jks
import pytest
from confluent_kafka import Consumer

from beam_ml.producer import csv_events
from beam_ml.spec import infer_spec
from pipelines import batch_predict, kafka_to_bigquery, produce, stream_predict, train
from tests.conftest import SECURE_USERS
from tests.test_kafka_secure import _jks

PASSWORD = SECURE_USERS["alice"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _csv_head(src: str, dst, rows: int) -> str:
    with open(src) as f:
        lines = f.read().splitlines()
    dst.write_text("\n".join(lines[:1 + rows]) + "\n")
    return str(dst)


@pytest.fixture
def secrets_dir(tmp_path):
    """Where the tests keep password files and key stores (the only place a password may be)."""
    d = tmp_path / "secrets"
    d.mkdir()
    return d


@pytest.fixture
def watch(caplog, capsys, tmp_path, secrets_dir):
    """``watch(*secrets, options=...)`` asserts no secret is in the logs, the printed output, or any
    file under tmp_path (the run's outputs: predictions, counts, metrics, model metadata) but the
    secrets directory."""
    for name in ("kafka.protocol.parser", "kafka.net.sasl.plain", "kafka.net.connection"):
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.INFO)

    def check(*secrets, shown=()):
        printed = capsys.readouterr()
        texts = {"logs": caplog.text, "stdout": printed.out, "stderr": printed.err,
                 **{f"shown[{i}]": str(s) for i, s in enumerate(shown)}}
        for root, _, files in os.walk(tmp_path):
            if root.startswith(str(secrets_dir)):
                continue
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    texts[os.path.join(root, name)] = f.read().decode("utf-8", "replace")
        for secret in secrets:
            leaked = [where for where, text in texts.items() if secret in text]
            assert not leaked, f"a password is in {leaked}"
        return printed

    return check


def _properties(path, kafka, certs, mechanism="SCRAM-SHA-512"):
    """A client.properties as Confluent Cloud hands it out (librdkafka key names)."""
    path.write_text(f"bootstrap.servers={kafka.bootstrap_servers}\nsecurity.protocol={kafka.security_protocol}\n"
                    f"sasl.mechanisms={mechanism}\n"
                    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f"username='alice' password='{PASSWORD}';\n"
                    f"ssl.ca.location={certs.ca}\nsession.timeout.ms=45000\n")
    return str(path)


def _topics(kafka, *prefixes):
    names = [f"{p}-{uuid.uuid4().hex[:8]}" for p in prefixes]
    for name in names:
        kafka.create_topic(name)
    return names


def test_stream_predict_over_sasl_ssl_scram_512_read_back_by_librdkafka(secure_kafka, secure_certs, fraud,
                                                                       tmp_path, secrets_dir, watch):
    kafka = secure_kafka("SASL_SSL")
    source, out, dlq = _topics(kafka, "in", "out", "dlq")
    csv_path = _csv_head(fraud[1], tmp_path / "events.csv", 60)
    (secrets_dir / "pw").write_text(PASSWORD + "\n")
    sent = produce.run([f"--input={csv_path}", f"--topic={source}", f"--bootstrap_servers={kafka.bootstrap_servers}",
                        "--security_protocol=SASL_SSL", "--sasl_mechanism=SCRAM-SHA-512", "--sasl_username=alice",
                        f"--sasl_password_file={secrets_dir / 'pw'}", f"--ssl_cafile={secure_certs.ca}"])
    assert sent["events"] == 60
    props = _properties(secrets_dir / "client.properties", kafka, secure_certs)
    result = stream_predict.run([f"--model_dir={fraud[0]}", f"--input_topic={source}", f"--output_topic={out}",
                                 f"--dead_letter_topic={dlq}", f"--kafka_config={props}", "--runner=DirectRunner",
                                 "--streaming", "--max_records=60", "--max_read_time=120"])
    assert result.counts["rows_in"] == 60 and result.counts["predictions"] == 60

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": "SASL_SSL",
                         "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": PASSWORD,
                         "ssl.ca.location": secure_certs.ca, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([out])
        predictions, polls = [], 0
        while len(predictions) < 60 and polls < 60:
            polls += 1
            for message in consumer.consume(num_messages=100, timeout=1.0):
                assert message.error() is None, message.error()
                predictions.append(json.loads(message.value()))
    finally:
        consumer.close()
    assert {p["event_id"] for p in predictions} == {event_id for event_id, _ in csv_events(csv_path)}
    watch(PASSWORD)


def test_train_from_a_topic_over_mutual_tls_with_an_encrypted_key(secure_kafka, secure_certs, fraud, tmp_path,
                                                                  watch):
    kafka = secure_kafka("MTLS")
    (topic,) = _topics(kafka, "train")
    tls = [f"--bootstrap_servers={kafka.bootstrap_servers}", "--security_protocol=SSL",
           f"--ssl_cafile={secure_certs.ca}", f"--ssl_certfile={secure_certs.client_cert}",
           f"--ssl_keyfile={secure_certs.client_key_encrypted}", f"--ssl_password={secure_certs.key_password}"]
    csv_path = fraud[1]  # 3,000 rows, both classes
    assert produce.run([f"--input={csv_path}", f"--topic={topic}", *tls])["events"] == 3000
    out = tmp_path / "out"
    result = train.run([f"--input_topic={topic}", "--label=Class", f"--output_dir={out}", "--epochs=1",
                        "--verbose=0", "--runner=DirectRunner", *tls])
    assert result.counts["rows_in"] == 3000 == result.counts["rows_good"] + result.counts["rows_dead"]
    assert os.path.exists(out / "metrics.json")
    watch(secure_certs.key_password)


def test_batch_predict_over_a_topic_over_ssl(secure_kafka, secure_certs, fraud, tmp_path, watch):
    kafka = secure_kafka("SSL")
    (topic,) = _topics(kafka, "batch")
    ssl_flags = [f"--bootstrap_servers={kafka.bootstrap_servers}", "--security_protocol=SSL",
                 f"--ssl_cafile={secure_certs.ca}"]
    csv_path = _csv_head(fraud[1], tmp_path / "rows.csv", 50)
    assert produce.run([f"--input={csv_path}", f"--topic={topic}", *ssl_flags])["events"] == 50
    preds = tmp_path / "preds.jsonl"
    batch_predict.run([f"--model_dir={fraud[0]}", f"--input_topic={topic}", f"--output={preds}",
                       "--runner=DirectRunner", *ssl_flags])
    lines = [json.loads(line) for name in os.listdir(tmp_path) if name.startswith("preds")
             for line in open(tmp_path / name) if name.endswith(".jsonl") and "dead" not in name]
    assert len(lines) == 50
    watch(PASSWORD)


def test_kafka_to_bigquery_with_the_templates_authentication_parameters(secure_kafka, secure_certs, fraud, tmp_path,
                                                                        secrets_dir, bq_dataset, bq_endpoint,
                                                                        monkeypatch, watch):
    kafka = secure_kafka("SASL_SSL")
    (topic,) = _topics(kafka, "tx")
    csv_path = _csv_head(fraud[1], tmp_path / "rows.csv", 40)
    (secrets_dir / "user").write_text("alice\n")
    monkeypatch.setenv("KAFKA_READ_PASSWORD", PASSWORD)
    truststore = _jks(secure_certs, secrets_dir / "truststore.jks", "store-pw-T5-never-shown")
    (secrets_dir / "ts-pw").write_text("store-pw-T5-never-shown")
    auth = ["--kafkaReadAuthenticationMode=SASL_PLAIN", f"--kafkaReadUsernameSecretId={secrets_dir / 'user'}",
            "--kafkaReadPasswordSecretId=env:KAFKA_READ_PASSWORD", f"--kafkaReadTruststoreLocation={truststore}",
            f"--kafkaReadTruststorePasswordSecretId={secrets_dir / 'ts-pw'}"]
    produce_flags = [f"--bootstrap_servers={kafka.bootstrap_servers}", "--security_protocol=SASL_SSL",
                     "--sasl_mechanism=PLAIN", "--sasl_username=alice", "--sasl_password_env=KAFKA_READ_PASSWORD",
                     f"--ssl_cafile={secure_certs.ca}"]
    assert produce.run([f"--input={csv_path}", f"--topic={topic}", *produce_flags])["events"] == 40
    spec = infer_spec(fraud[1], "Class").save(str(secrets_dir / "spec.json"))
    result = kafka_to_bigquery.run([f"--bootstrapServers={kafka.bootstrap_servers}", f"--inputTopic={topic}",
                                    f"--outputTableSpec={bq_dataset.table('tx')}", f"--spec={spec}",
                                    f"--bigquery_endpoint={bq_endpoint.rest}", "--runner=DirectRunner",
                                    "--max_records=40", "--max_read_time=120", *auth])
    assert result.counts["records_in"] == 40 and result.counts["rows_written"] == 40
    assert len(bq_dataset.rows("tx")) == 40
    watch(PASSWORD, "store-pw-T5-never-shown")


def test_a_kafka_lookup_over_sasl_plaintext(secure_kafka, fraud, tmp_path, watch):
    """stream_predict's statement joins a `kafka:` lookup topic read over SASL_PLAINTEXT SCRAM-SHA-256."""
    from kafka import KafkaProducer

    kafka = secure_kafka("SASL_PLAINTEXT")
    source, out, dlq, users = _topics(kafka, "in", "out", "dlq", "users")
    csv_path = _csv_head(fraud[1], tmp_path / "events.csv", 20)
    events = list(csv_events(csv_path))
    flags = [f"--bootstrap_servers={kafka.bootstrap_servers}", "--security_protocol=SASL_PLAINTEXT",
             "--sasl_mechanism=SCRAM-SHA-256", "--sasl_username=bob", f"--sasl_password={SECURE_USERS['bob']}"]
    producer = KafkaProducer(**kafka.client_kwargs(user="bob", mechanism="SCRAM-SHA-256"))
    try:
        for _, event in events:
            producer.send(users, key=str(event["Time"]).encode(),
                          value=json.dumps({"Time": event["Time"], "segment": "gold"}).encode())
        producer.flush(10)
    finally:
        producer.close()
    assert produce.run([f"--input={csv_path}", f"--topic={source}", *flags])["events"] == 20
    result = stream_predict.run([f"--model_dir={fraud[0]}", f"--input_topic={source}", f"--output_topic={out}",
                                 f"--dead_letter_topic={dlq}", "--runner=DirectRunner", "--streaming",
                                 "--max_records=20", "--max_read_time=120", f"--lookup=u=kafka:{users}",
                                 "--sql=SELECT e.* FROM events e LEFT JOIN u ON e.Time = u.Time",
                                 *flags])
    assert result.counts["rows_in"] == 20 and result.counts["predictions"] == 20
    watch(SECURE_USERS["bob"])


def test_a_secured_stream_predict_staged_for_dataflow_shows_no_password(secure_kafka, secure_certs, fraud,
                                                                        gcs_environ, gcs_bucket, watch):
    from beam_ml.testing.dataflow import stage_on_dataflow

    kafka = secure_kafka("SASL_SSL")
    staged = stage_on_dataflow(
        "pipelines.stream_predict",
        [f"--model_dir={fraud[0]}", "--input_topic=tx", "--output_topic=scores", "--dead_letter_topic=dlq",
         f"--bootstrap_servers={kafka.bootstrap_servers}", "--security_protocol=SASL_SSL",
         "--sasl_mechanism=SCRAM-SHA-512", "--sasl_username=alice", f"--sasl_password={PASSWORD}",
         f"--ssl_cafile={secure_certs.ca}", "--model_reload=none", "--streaming"],
        bucket=gcs_bucket, raise_errors=False)
    assert staged.error is None, repr(staged.error)
    options = staged.template["environment"]["sdkPipelineOptions"]
    assert options["options"]["sasl_username"] == "alice"
    # The options and display data the Dataflow job page shows.
    watch(PASSWORD, shown=[json.dumps(staged.template)])
