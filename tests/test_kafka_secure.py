"""Secured Kafka, for real: TLS (stunnel) and SASL (a test front) in front of Tansu on 127.0.0.1.

    python -m pytest tests/test_kafka_secure.py -q

The connection matrix (SSL, mutual TLS with a plain and an encrypted key, SASL_PLAINTEXT
and SASL_SSL x PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) runs with kafka-python clients built
by beam_ml's own config code from flags or a Confluent-style client.properties; refusals
end within the pre-flight's bound with one line naming the setting. Full pipeline runs
over these listeners are in tests/test_kafka_secure_pipelines.py.
"""
import logging
import os
import time
import uuid

import jks
import pytest
from apache_beam.transforms.display import DisplayData
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from beam_ml.errors import UserError
from beam_ml.io.kafka.config import KafkaClientConfig, config_from_flags, read_secret_id
from beam_ml.io.kafka.stores import pem_files_from_java_stores
from beam_ml.jobs.settings import kafka_client_config
from beam_ml.options import KafkaOptions, parse_pipeline_options
from beam_ml.testing.kafka_secure import make_certificates
from tests.conftest import SECURE_USERS

PASSWORD = SECURE_USERS["alice"]
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# (listener, flags beyond --bootstrap_servers; {ca}, {cert}, {key}, {enc_key}, {key_pw} filled in)
MATRIX = [("SSL", ["--security_protocol=SSL", "--ssl_cafile={ca}"]),
          ("MTLS", ["--security_protocol=SSL", "--ssl_cafile={ca}", "--ssl_certfile={cert}", "--ssl_keyfile={key}"]),
          ("MTLS", ["--security_protocol=SSL", "--ssl_cafile={ca}", "--ssl_certfile={cert}",
                    "--ssl_keyfile={enc_key}", "--ssl_password={key_pw}"])]
MATRIX += [("SASL_PLAINTEXT", ["--security_protocol=SASL_PLAINTEXT", f"--sasl_mechanism={m}",
                               "--sasl_username=alice", f"--sasl_password={PASSWORD}"]) for m in MECHANISMS]
MATRIX += [("SASL_SSL", ["--security_protocol=SASL_SSL", f"--sasl_mechanism={m}", "--sasl_username=alice",
                         f"--sasl_password={PASSWORD}", "--ssl_cafile={ca}"]) for m in MECHANISMS]


def _fill(flags, certs):
    return [f.format(ca=certs.ca, cert=certs.client_cert, key=certs.client_key, enc_key=certs.client_key_encrypted,
                     key_pw=certs.key_password) for f in flags]


def _config(argv) -> KafkaClientConfig:
    return kafka_client_config(parse_pipeline_options(argv, KafkaOptions))


def _round_trip(config: KafkaClientConfig, topic: str) -> list:
    """Writes two records and reads them back with clients built from `config`."""
    producer = KafkaProducer(**config.client_kwargs(), acks="all")
    try:
        for value in (b"one", b"two"):
            producer.send(topic, value=value).get(timeout=10)
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(**config.client_kwargs(), enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got, deadline = [], time.monotonic() + 15
        while len(got) < 2 and time.monotonic() < deadline:
            got += [r.value for r in consumer.poll(timeout_ms=300).get(tp, [])]
        return got
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.parametrize("listener,flags", MATRIX,
                         ids=["ssl", "mtls", "mtls-encrypted-key"] +
                             [f"sasl_plaintext-{m}" for m in MECHANISMS] + [f"sasl_ssl-{m}" for m in MECHANISMS])
def test_every_protocol_and_mechanism_reads_and_writes(secure_kafka, secure_certs, listener, flags):
    kafka = secure_kafka(listener)
    topic = f"m-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic)
    config = _config([f"--bootstrap_servers={kafka.bootstrap_servers}", *_fill(flags, secure_certs)])
    assert _round_trip(config, topic) == [b"one", b"two"]


CONFLUENT_PROPERTIES = """\
# Required connection configs for Kafka producer, consumer, and admin
bootstrap.servers={bootstrap}
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username='alice' password='{password}';
ssl.ca.location={ca}
# Best practice for higher availability in librdkafka clients prior to 1.7
session.timeout.ms=45000
client.dns.lookup=use_all_dns_ips
acks=all
"""


@pytest.mark.integration
def test_a_confluent_style_client_properties_file_connects(secure_kafka, secure_certs, tmp_path):
    kafka = secure_kafka("SASL_SSL")
    topic = f"p-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic)
    props = tmp_path / "client.properties"
    props.write_text(CONFLUENT_PROPERTIES.format(bootstrap=kafka.bootstrap_servers, password=PASSWORD,
                                                 ca=secure_certs.ca))
    assert _round_trip(_config([f"--kafka_config={props}"]), topic) == [b"one", b"two"]


# (listener, flags, the one line's expected start, a part it must name)
REFUSALS = [
    ("SASL_SSL", ["--security_protocol=SASL_SSL", "--sasl_mechanism=SCRAM-SHA-512", "--sasl_username=alice",
                  "--sasl_password=wrong", "--ssl_cafile={ca}"],
     "SASL authentication failed for user 'alice' (SCRAM-SHA-512)", "--sasl_password"),
    ("SASL_PLAINTEXT", ["--security_protocol=SASL_PLAINTEXT", "--sasl_mechanism=PLAIN", "--sasl_username=mallory",
                        f"--sasl_password={PASSWORD}"],
     "SASL authentication failed for user 'mallory' (PLAIN)", "--sasl_username"),
    ("SASL_SSL", ["--security_protocol=SASL_SSL", "--sasl_mechanism=SCRAM-SHA-256", "--sasl_username=nobody",
                  f"--sasl_password={PASSWORD}", "--ssl_cafile={ca}"],
     "SASL authentication failed for user 'nobody' (SCRAM-SHA-256)", "invalid credentials"),
    ("SSL", ["--security_protocol=SSL", "--ssl_cafile={other_ca}"], "--ssl_cafile: TLS to", "not signed by this CA"),
    ("MTLS", ["--security_protocol=SSL", "--ssl_cafile={ca}"], "--ssl_certfile: ", "mutual TLS"),
    ("SSL", [], "--security_protocol=PLAINTEXT", "expects TLS"),
    ("MTLS", ["--security_protocol=SSL", "--ssl_cafile={ca}", "--ssl_certfile={cert}", "--ssl_keyfile={enc_key}",
              "--ssl_password=not-the-key-password"], "--ssl_keyfile: cannot load", "--ssl_password"),
]


@pytest.mark.integration
@pytest.mark.parametrize("listener,flags,start,names", REFUSALS,
                         ids=["wrong-password", "unknown-user-plain", "unknown-user-scram", "wrong-ca",
                              "missing-client-cert", "plaintext-at-tls-port", "wrong-key-password"])
def test_a_refusal_is_one_line_naming_the_setting_and_fast(secure_kafka, secure_certs, listener, flags, start,
                                                           names, caplog):
    kafka = secure_kafka(listener)
    flags = [f.replace("{other_ca}", secure_certs.other_ca) for f in flags]
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(UserError) as refused:
            _config([f"--bootstrap_servers={kafka.bootstrap_servers}", *_fill(flags, secure_certs)])
    elapsed = time.monotonic() - started
    message = str(refused.value)
    assert "\n" not in message and message.startswith(start) and names in message, message
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert PASSWORD not in message and secure_certs.key_password not in message
    # No retry loop: kafka-python's own warnings about the probe stay out of the logs.
    assert not [r for r in caplog.records if r.name.startswith("kafka") and r.levelno >= logging.WARNING]


def test_a_password_flag_never_reaches_beams_displayed_options():
    secret = "flag-pw-Zx81-never-shown"
    options = parse_pipeline_options(["--bootstrap_servers=127.0.0.1:1", "--security_protocol=SASL_PLAINTEXT",
                                      "--sasl_mechanism=PLAIN", "--sasl_username=u", f"--sasl_password={secret}",
                                      "--ssl_password", secret], KafkaOptions)
    shown = " ".join([str(options), repr(options.get_all_options()), repr(options.get_all_options(drop_default=True)),
                      repr(DisplayData.create_from_options(options).items)])
    assert secret not in shown
    config = kafka_client_config(options)  # 127.0.0.1:1 refuses: unreachable is the pipeline's to report
    assert config.sasl_plain_password == secret and config.ssl_password == secret
    assert secret not in repr(config)


def test_passwords_come_from_a_file_or_an_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv("KAFKA_PW", "from-env")
    base = ["--bootstrap_servers=127.0.0.1:1", "--security_protocol=SASL_PLAINTEXT", "--sasl_mechanism=PLAIN",
            "--sasl_username=u"]
    assert _config(base + [f"--sasl_password_file={tmp_path / 'pw'}"]).sasl_plain_password == "from-file"
    assert _config(base + ["--sasl_password_env=KAFKA_PW"]).sasl_plain_password == "from-env"
    props = tmp_path / "c.properties"
    props.write_text(f"sasl.password.env=KAFKA_PW\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                     f"sasl.username=u\nbootstrap.servers=127.0.0.1:1\n")
    assert _config([f"--kafka_config={props}"]).sasl_plain_password == "from-env"
    with pytest.raises(UserError, match="^--sasl_password_env: the environment variable NOPE is not set"):
        _config(base + ["--sasl_password_env=NOPE"])
    with pytest.raises(UserError, match="^--sasl_password_file: cannot read the password file"):
        _config(base + [f"--sasl_password_file={tmp_path / 'missing'}"])


def _jks(certs, path, store_password, key_password=None):
    """A JKS written by pyjks: the CA as a trusted entry, plus the client key and certificate when asked."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def der(pem_path):
        return x509.load_pem_x509_certificate(open(pem_path, "rb").read()).public_bytes(serialization.Encoding.DER)

    entries = [jks.TrustedCertEntry.new("ca", der(certs.ca))]
    if key_password:
        key = serialization.load_pem_private_key(open(certs.client_key, "rb").read(), None)
        pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        entry = jks.PrivateKeyEntry.new("client", [der(certs.client_cert), der(certs.ca)], pkcs8, "pkcs8")
        entry.encrypt(key_password)
        entries.append(entry)
    jks.KeyStore.new("jks", entries).save(str(path), store_password)
    return str(path)


def test_jks_stores_become_the_pem_files_kafka_python_reads(tmp_path):
    certs = make_certificates(str(tmp_path / "pki"))
    trust = _jks(certs, tmp_path / "trust.jks", "store-pw")
    keys = _jks(certs, tmp_path / "keys.jks", "store-pw", key_password="key-pw")
    files = pem_files_from_java_stores({"ssl_truststore_location": trust, "ssl_truststore_password": "store-pw",
                                        "ssl_keystore_location": keys, "ssl_keystore_password": "store-pw",
                                        "ssl_key_password": "key-pw"})
    assert open(files["ssl_cafile"]).read() == open(certs.ca).read()
    assert open(files["ssl_certfile"]).read().startswith(open(certs.client_cert).read())
    assert oct(os.stat(files["ssl_keyfile"]).st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="ssl_truststore_location: .*wrong store password") as e:
        pem_files_from_java_stores({"ssl_truststore_location": trust, "ssl_truststore_password": "nope"})
    assert "nope" not in str(e.value)
    with pytest.raises(ValueError, match="wrong key password"):
        pem_files_from_java_stores({"ssl_keystore_location": keys, "ssl_keystore_password": "store-pw",
                                    "ssl_key_password": "nope"})


def test_template_authentication_modes_map_to_client_settings(tmp_path, monkeypatch):
    certs = make_certificates(str(tmp_path / "pki"))
    trust = _jks(certs, tmp_path / "trust.jks", "store-pw")
    keys = _jks(certs, tmp_path / "keys.jks", "store-pw", key_password="key-pw")
    (tmp_path / "user").write_text("alice\n")
    monkeypatch.setenv("TS_PW", "store-pw")
    monkeypatch.setenv("KEY_PW", "key-pw")
    monkeypatch.setenv("KAFKA_PW", PASSWORD)
    base = {"bootstrap_servers": "127.0.0.1:1"}
    scram = config_from_flags({**base, "kafka_read_authentication_mode": "SASL_SCRAM_512",
                               "kafka_read_sasl_scram_username_secret_id": str(tmp_path / "user"),
                               "kafka_read_sasl_scram_password_secret_id": "env:KAFKA_PW",
                               "kafka_read_sasl_scram_truststore_location": trust,
                               "kafka_read_sasl_scram_truststore_password_secret_id": "env:TS_PW"}, set())
    assert (scram.security_protocol, scram.sasl_mechanism, scram.sasl_plain_username,
            scram.sasl_plain_password) == ("SASL_SSL", "SCRAM-SHA-512", "alice", PASSWORD)
    assert open(scram.ssl_cafile).read() == open(certs.ca).read()
    plain = config_from_flags({**base, "kafka_read_authentication_mode": "SASL_PLAIN",
                               "kafka_read_username_secret_id": str(tmp_path / "user"),
                               "kafka_read_password_secret_id": "env:KAFKA_PW"}, set())
    assert (plain.security_protocol, plain.sasl_mechanism) == ("SASL_SSL", "PLAIN")
    tls = config_from_flags({**base, "kafka_read_authentication_mode": "TLS",
                             "kafka_read_truststore_location": trust,
                             "kafka_read_truststore_password_secret_id": "env:TS_PW",
                             "kafka_read_keystore_location": keys,
                             "kafka_read_keystore_password_secret_id": "env:TS_PW",
                             "kafka_read_key_password_secret_id": "env:KEY_PW"}, set())
    assert tls.security_protocol == "SSL" and tls.ssl_certfile and tls.ssl_keyfile
    assert config_from_flags({**base, "kafka_read_authentication_mode": "NONE"}, set()).security_protocol == \
        "PLAINTEXT"
    with pytest.raises(ValueError, match="^--kafka_read_password_secret_id: Secret Manager versions cannot be read"):
        read_secret_id("kafka_read_password_secret_id", "projects/p/secrets/s/versions/1")
    with pytest.raises(ValueError, match="^--kafka_read_username_secret_id: required with"):
        config_from_flags({**base, "kafka_read_authentication_mode": "SASL_PLAIN"}, set())


def test_template_parameter_names_are_flag_aliases():
    options = parse_pipeline_options(["--kafkaReadAuthenticationMode=SASL_SCRAM_512",
                                      "--kafkaReadSaslScramUsernameSecretId=/x"], KafkaOptions)
    values = options.get_all_options()
    assert values["kafka_read_authentication_mode"] == "SASL_SCRAM_512"
    assert values["kafka_read_sasl_scram_username_secret_id"] == "/x"


@pytest.mark.integration
def test_the_command_line_ends_with_one_line_and_status_2(secure_kafka, secure_certs, tmp_path):
    """`python -m pipelines.produce` with a wrong password: stderr is the one line, within 15 s of launch."""
    import subprocess
    import sys

    kafka = secure_kafka("SASL_SSL")
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("a,b\n1,2\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.produce", f"--input={csv_path}", "--topic=t",
         f"--bootstrap_servers={kafka.bootstrap_servers}", "--security_protocol=SASL_SSL",
         "--sasl_mechanism=SCRAM-SHA-512", "--sasl_username=alice", "--sasl_password=not-alices",
         f"--ssl_cafile={secure_certs.ca}"],
        cwd=repo, env=dict(os.environ, PYTHONPATH=repo), capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: SASL authentication failed for user 'alice' (SCRAM-SHA-512)"), done.stderr
    assert "--sasl_password" in lines[0] and "not-alices" not in done.stderr + done.stdout
    assert elapsed < 15, f"took {elapsed:.1f}s"


def test_the_flex_template_shows_the_authentication_parameters_and_no_password():
    from templates import flex

    params = {p["name"]: p for p in flex.metadata_for("kafka_to_bigquery")["parameters"]}
    assert params["kafkaReadAuthenticationMode"]["regexes"] == ["^(NONE|TLS|SASL_PLAIN|SASL_SCRAM_512)$"]
    assert {"kafkaReadUsernameSecretId", "kafkaReadPasswordSecretId", "kafkaReadTruststoreLocation",
            "kafkaReadKeystoreLocation", "kafkaReadSaslScramPasswordSecretId", "ssl_certfile",
            "sasl_password_file"} <= set(params)
    assert not {"sasl_password", "ssl_password"} & set(params)
