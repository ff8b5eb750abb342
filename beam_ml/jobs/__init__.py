"""Jobs: the code that wires whole pipelines (flags -> arguments, plan -> build -> write -> run -> counts).

`python -m pipelines.X` parses flags and calls one of these; the library
(`beam_ml.io`, `clean`, `ingest`, `inference`, `training`, ...) never imports
them (tests/test_architecture.py, docs/ARCHITECTURE.md).

Modules: `train`, `batch_predict`, `stream_predict`, `kafka_to_bigquery`,
`stream_demo` and `demo` (the jobs), `sql` (--sql/--lookup for the ML jobs),
`bigquery` (the ML jobs' BigQuery inputs and outputs), `settings` (flags ->
the explicit arguments the library takes).
"""
