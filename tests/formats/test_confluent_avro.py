"""Confluent wire-format Avro against a real HTTP registry, with bytes written by confluent-kafka itself.

The registry fixture (beam_ml.testing.schema_registry) is checked with
confluent-kafka's SchemaRegistryClient; the values our decoder reads come from
confluent-kafka's AvroSerializer, and what our writer produces is read back by
its AvroDeserializer.
"""
import json
import os
import subprocess
import time

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from apache_beam.transforms.display import DisplayData
from hypothesis import given, settings, strategies as st

from beam_ml.errors import UserError
from beam_ml.formats import (ConfluentAvroWriter, RegistryConfig, SchemaRegistry, format_from_flags, record_format,
                             registry_from_flags, value_format_name)
from beam_ml.formats.registry import USER_INFO_ENV, RegistryUnavailable
from beam_ml.options import StreamPredictOptions, parse_pipeline_options
from beam_ml.testing.schema_registry import SchemaRegistryServer

V1 = {"type": "record", "name": "Transaction", "namespace": "fraud", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "amount", "type": "double"},
    {"name": "merchant", "type": "string"}]}
V2 = {**V1, "fields": V1["fields"] + [{"name": "channel", "type": "string", "default": "web"}]}


@pytest.fixture(scope="module")
def registry():
    with SchemaRegistryServer() as server:
        yield server


def _serializer(url, schema, **conf):
    client = SchemaRegistryClient({"url": url, **conf})
    return client, AvroSerializer(client, json.dumps(schema))


def _ctx(topic):
    return SerializationContext(topic, MessageField.VALUE)


class _Opts:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_fixture_answers_confluent_kafka_client(registry):
    client = SchemaRegistryClient({"url": registry.url})
    schema_id = client.register_schema("fixture-value", Schema(json.dumps(V1), "AVRO"))
    assert client.register_schema("fixture-value", Schema(json.dumps(V1), "AVRO")) == schema_id
    assert "fixture-value" in client.get_subjects()
    assert client.get_versions("fixture-value") == [1]
    latest = client.get_latest_version("fixture-value")
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert json.loads(client.get_schema(schema_id).schema_str)["name"] == "Transaction"
    found = client.lookup_schema("fixture-value", Schema(json.dumps(V1), "AVRO"))
    assert found.schema_id == schema_id
    assert client.get_version("fixture-value", 1).schema_id == schema_id


def test_decodes_serializer_bytes_across_two_schema_versions(registry):
    topic = "evolve"
    _, ser1 = _serializer(registry.url, V1)
    old = ser1({"event_id": "a", "amount": 1.5, "merchant": "m1"}, _ctx(topic))
    _, ser2 = _serializer(registry.url, V2)
    new = ser2({"event_id": "b", "amount": 2.5, "merchant": "m2", "channel": "pos"}, _ctx(topic))
    assert old[0] == 0 and new[0] == 0 and old[1:5] != new[1:5]

    fmt = format_from_flags(_Opts(value_format="avro_confluent", schema_registry_url=registry.url), topic)
    assert fmt.decode(old) == {"event_id": "a", "amount": 1.5, "merchant": "m1", "channel": "web"}
    assert fmt.decode(new) == {"event_id": "b", "amount": 2.5, "merchant": "m2", "channel": "pos"}
    assert [f.name for f in fmt.arrow_schema()] == ["event_id", "amount", "merchant", "channel"]
    # Each writer schema is fetched once, then cached.
    before = len([r for r in registry.requests if r[1].startswith("/schemas/ids/")])
    for _ in range(50):
        fmt.decode(old)
        fmt.decode(new)
    assert len([r for r in registry.requests if r[1].startswith("/schemas/ids/")]) == before <= 2


def test_bad_records_have_reasons(registry):
    _, ser = _serializer(registry.url, V1)
    good = ser({"event_id": "a", "amount": 1.5, "merchant": "m1"}, _ctx("bad"))
    fmt = format_from_flags(_Opts(value_format="avro_confluent", schema_registry_url=registry.url), "bad")
    cases = {
        b"\x01" + good[1:]: "magic byte 1",
        b"\x00\x00\x00\x7f\xff" + good[5:]: "unknown schema id 32767",
        good[:-2]: "invalid Avro for schema id",
        good + b"\x00": "bytes left after the record",
        b"\x00\x00": "fewer than the 5-byte header",
        None: "tombstone",
    }
    for value, reason in cases.items():
        with pytest.raises(ValueError, match=reason):
            fmt.decode(value)
    with pytest.raises(ValueError, match="unknown schema id 32767"):  # asked once, not per record
        fmt.decode(b"\x00\x00\x00\x7f\xff" + good[5:])
    assert registry.requests.count(("GET", "/schemas/ids/32767")) == 1


@pytest.fixture(scope="module")
def dirt(registry):
    _, ser = _serializer(registry.url, V1)
    good = ser({"event_id": "g", "amount": 2.0, "merchant": "m"}, _ctx("dirt"))
    return record_format("avro_confluent", registry=RegistryConfig(registry.url), topic="dirt").start(), good


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), schema_id=st.integers(min_value=0, max_value=2 ** 32 - 1))
def test_random_bytes_never_crash_the_decoder(dirt, data, schema_id):
    """Real-world dirt: random bytes, any magic byte, huge ids, truncated bodies -> a record or a ValueError
    (unknown ids are asked of the registry, which answers 404)."""
    fmt, good = dirt
    for value in (data, b"\x00" + schema_id.to_bytes(4, "big") + data, good[:len(data) % len(good)],
                  good[:5] + data):
        try:
            record = fmt.decode(value)
        except ValueError as e:
            assert str(e)
        else:
            assert isinstance(record, dict) and set(record) == {"event_id", "amount", "merchant"}


def test_unknown_subject_and_unreachable_registry_fail_fast_in_one_line(registry):
    with pytest.raises(UserError, match="has no subject 'nothing-value'") as e:
        format_from_flags(_Opts(value_format="avro_confluent", schema_registry_url=registry.url), "nothing")
    assert "\n" not in str(e.value)
    with SchemaRegistryServer() as gone:
        url = gone.url
    start = time.monotonic()
    with pytest.raises(UserError, match="--schema_registry_url: cannot reach the schema registry") as e:
        format_from_flags(_Opts(value_format="avro_confluent", schema_registry_url=url), "x")
    assert time.monotonic() - start < 15 and "\n" not in str(e.value)
    with pytest.raises(UserError, match="--schema_registry_url: required"):
        format_from_flags(_Opts(value_format="AVRO_CONFLUENT_WIRE_FORMAT"), "x")


def test_registry_down_while_running_is_retried_not_dropped(registry):
    _, ser = _serializer(registry.url, V1)
    value = ser({"event_id": "r", "amount": 3.0, "merchant": "m"}, _ctx("retry"))
    fmt = record_format("avro_confluent", registry=RegistryConfig(registry.url, retry_seconds=30), topic="retry")
    fmt.start()
    fmt.registry._by_id.clear()
    fmt._plans.clear()
    registry.fail_next(3)  # three 503s, then the answer
    assert fmt.decode(value)["event_id"] == "r"
    short = record_format("avro_confluent", registry=RegistryConfig(registry.url, retry_seconds=0.5), topic="retry")
    short.start()
    short.registry._by_id.clear()
    short._plans.clear()
    registry.fail_next(1000)
    try:
        with pytest.raises(RegistryUnavailable):  # not a ValueError: the bundle fails and is retried
            short.decode(value)
    finally:
        registry.fail_next(0)


def test_writer_output_reads_back_with_confluent_deserializer(registry):
    client = SchemaRegistry(RegistryConfig(registry.url))
    writer = ConfluentAvroWriter(client, "preds-value", name="Prediction")
    records = [{"event_id": "e1", "score": 0.25, "class_id": 0, "probabilities": [0.75, 0.25], "key": None},
               {"event_id": "e2", "score": 1, "class_id": 1, "probabilities": [0.1, 0.9], "key": "k",
                "produce_ts": 17}]
    values = [writer.encode(r) for r in records]
    deser = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))
    back = [deser(v, _ctx("preds")) for v in values]
    assert back[0]["event_id"] == "e1" and back[0]["probabilities"] == [0.75, 0.25] and back[0]["key"] is None
    assert back[1]["score"] == 1.0 and back[1]["produce_ts"] == 17 and back[1]["key"] == "k"
    assert SchemaRegistryClient({"url": registry.url}).get_versions("preds-value") == [1, 2]


def test_basic_auth_and_tls(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    with SchemaRegistryServer(users={"alice": "pw-XYZZY"}, tls=(cert, key)) as server:
        conf = {"url": server.url, "basic.auth.user.info": "alice:pw-XYZZY", "ssl.ca.location": cert}
        _, ser = _serializer(server.url, V1, **{k: v for k, v in conf.items() if k != "url"})
        value = ser({"event_id": "t", "amount": 1.0, "merchant": "m"}, _ctx("secure"))
        opts = _Opts(value_format="avro_confluent", schema_registry_url=server.url,
                     schema_registry_user_info="alice:pw-XYZZY", schema_registry_ca_file=cert)
        assert format_from_flags(opts, "secure").decode(value)["event_id"] == "t"
        # from a file, and from the environment
        path = tmp_path / "user_info"
        path.write_text("alice:pw-XYZZY\n")
        opts_file = _Opts(value_format="avro_confluent", schema_registry_url=server.url,
                          schema_registry_user_info_file=str(path), schema_registry_ca_file=cert)
        assert format_from_flags(opts_file, "secure").decode(value)["event_id"] == "t"
        monkeypatch.setenv(USER_INFO_ENV, "alice:pw-XYZZY")
        opts_env = _Opts(value_format="avro_confluent", schema_registry_url=server.url, schema_registry_ca_file=cert)
        assert format_from_flags(opts_env, "secure").decode(value)["event_id"] == "t"
        monkeypatch.delenv(USER_INFO_ENV)
        # refused: a wrong password, an untrusted certificate; never the password in the message
        wrong = _Opts(value_format="avro_confluent", schema_registry_url=server.url,
                      schema_registry_user_info="alice:wrong-pw", schema_registry_ca_file=cert)
        with pytest.raises(UserError, match="refused the credentials") as e:
            format_from_flags(wrong, "secure")
        assert "wrong-pw" not in str(e.value) and "\n" not in str(e.value)
        untrusted = _Opts(value_format="avro_confluent", schema_registry_url=server.url,
                          schema_registry_user_info="alice:pw-XYZZY")
        with pytest.raises(UserError, match="--schema_registry_ca_file: .* not trusted") as e:
            format_from_flags(untrusted, "secure")
        assert "pw-XYZZY" not in str(e.value) and "pw-XYZZY" not in repr(RegistryConfig(server.url, "alice:pw-XYZZY"))


def test_a_user_info_flag_never_reaches_beams_displayed_options(tmp_path):
    cert, key = _self_signed(tmp_path)
    with SchemaRegistryServer(users={"alice": "pw-Qv27-never-shown"}, tls=(cert, key)) as server:
        _, ser = _serializer(server.url, V1, **{"basic.auth.user.info": "alice:pw-Qv27-never-shown",
                                                "ssl.ca.location": cert})
        value = ser({"event_id": "e1", "amount": 1.0, "merchant": "m"}, _ctx("t"))
        options = parse_pipeline_options(["--input_topic=t", f"--schema_registry_url={server.url}",
                                          "--schema_registry_user_info", "alice:pw-Qv27-never-shown",
                                          f"--schema_registry_ca_file={cert}", "--value_format=avro_confluent"],
                                         StreamPredictOptions)
        shown = " ".join([str(options), repr(options.get_all_options()),
                          repr(DisplayData.create_from_options(options).items)])
        assert "pw-Qv27" not in shown
        # the job still logs in with the real value (a wrong one is refused at start, see above)
        opts = options.view_as(StreamPredictOptions)
        assert registry_from_flags(opts).user_info == "alice:pw-Qv27-never-shown"
        assert format_from_flags(opts, "t").decode(value)["event_id"] == "e1"


def test_message_format_names():
    assert [value_format_name(v) for v in ("AVRO_CONFLUENT_WIRE_FORMAT", "AVRO_BINARY_ENCODING", "JSON", "csv")] \
        == ["avro_confluent", "avro", "json", "csv"]


def _self_signed(tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key
