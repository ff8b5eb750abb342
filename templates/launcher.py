"""Flex Template entry point: runs the pipeline named by BEAM_ML_PIPELINE with the launch flags.

The Dockerfile sets FLEX_TEMPLATE_PYTHON_PY_FILE to this file; one image serves
every pipeline (train, batch_predict, stream_predict, kafka_to_bigquery).
"""
import importlib
import os
import sys

if __name__ == "__main__":
    pipeline = os.environ.get("BEAM_ML_PIPELINE", "train")
    importlib.import_module(f"pipelines.{pipeline}").main(sys.argv[1:])
