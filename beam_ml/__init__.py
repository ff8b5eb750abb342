"""beam_ml: Apache Beam pipelines for machine learning on batch and streaming data."""
import os as _os

# The models are Keras 2 (tf_keras), as tf.Transform's Keras layer. tensorflow_transform
# sets TF_USE_LEGACY_KERAS=1 itself, but only once `import tensorflow` has run, and that
# import, without the variable, first loads Keras 3 and (through its scikit-learn wrapper)
# scikit-learn: ~1 s more at the start of every process that imports TensorFlow (the CLI,
# each SDK worker process, stream_predict). Set before any beam_ml module imports it.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# Quiet by default (beam_ml.logs): TensorFlow's C++ log level must be set before it loads.
from beam_ml import logs as _logs  # noqa: E402

_logs.prepare(_logs.verbose_level())
