"""Named in --beam_plugins by `use_endpoint(..., options=)`: redirects a worker subprocess's BigQuery read clients.

A pipeline run with --bigquery_endpoint starts DirectRunner worker
subprocesses (multi_processing) that build Beam's read clients themselves. Beam
imports every --beam_plugins module in a worker before it runs anything, so
importing this module is how such a worker applies the endpoint its parent's
job chose (carried by the environment variable `ENDPOINT_ENV`). This is the one
module whose import patches anything, and only a job that asked for an endpoint
names it; with no such variable it does nothing.
"""
from beam_ml.io.bigquery.endpoint import use_endpoint_from_environment

use_endpoint_from_environment()
