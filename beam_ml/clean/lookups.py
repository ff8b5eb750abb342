"""Lookup tables a statement joins: a CSV file, an Arrow table, a Kafka topic read as a table, a BigQuery table.

    users = lookup_from_flag("users=data/users.csv")             # --lookup=users=data/users.csv
    users = KafkaLookup("users", "users-topic", bootstrap_servers="127.0.0.1:9092")
    users.open(); table = users.load()                            # on a worker, in DoFn.setup()
    changed = users.refresh()                                     # every --lookup_refresh seconds
    users.close()                                                 # in DoFn.teardown()

A lookup is a ksqlDB table: the latest row per key. `Engine.set_lookup` keeps
the last row per join key of whatever a lookup returns; a Kafka lookup is a
changelog (compacted-topic semantics): a record upserts its message key, a
record with a null value (a tombstone) deletes it.

A lookup object holds configuration only and pickles; clients (a Kafka
consumer) are made by `open()` where it runs. `schema()` is what statement
preparation binds against, before any data moves (it reads the file or topic
once on the launcher when no schema is given).

BigQuery tables: `--lookup=users=bq:project:dataset.users` (`BigQueryLookup`,
read whole through the REST API, re-read on refresh when the table changed);
with `--bigquery_endpoint` it reads from that emulator or private endpoint.
Other sources plug in with `register_scheme(scheme, factory)`.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.csv as pacsv

from beam_ml.errors import UserError
from beam_ml.formats import JsonFormat
from beam_ml.io.bigquery import endpoint_client, parse_table
from beam_ml.io.kafka import KafkaClientConfig

__all__ = ["Lookup", "ArrowLookup", "CsvLookup", "KafkaLookup", "BigQueryLookup", "lookup_from_flag", "register_scheme",
           "parse_lookup_flag"]

_LOGGER = logging.getLogger(__name__)


class Lookup:
    """A named table a statement joins; subclasses say where its rows come from.

    Attributes:
      name: the table's name in statements.
    """

    def __init__(self, name: str):
        self.name = name

    def schema(self) -> pa.Schema:
        """The table's columns, for statement preparation (may read the source)."""
        raise NotImplementedError

    def open(self) -> None:
        """Makes clients (on the worker). Idempotent."""

    def load(self) -> pa.Table:
        """The whole table as it is now."""
        raise NotImplementedError

    def refresh(self) -> Optional[pa.Table]:
        """The table again if it changed since the last load/refresh, else None."""
        return None

    def close(self) -> None:
        """Releases clients."""

    def describe(self) -> str:
        """Where the rows come from, for logs and stored metadata."""
        return type(self).__name__


class ArrowLookup(Lookup):
    """A fixed in-memory table (tests, or a table computed by the pipeline's launcher)."""

    def __init__(self, name: str, table: pa.Table):
        super().__init__(name)
        self._table = table

    def schema(self) -> pa.Schema:
        return self._table.schema

    def load(self) -> pa.Table:
        return self._table

    def describe(self) -> str:
        return f"arrow table ({self._table.num_rows} rows)"


class CsvLookup(Lookup):
    """A CSV file with a header; column types inferred by pyarrow unless given.

    `refresh()` re-reads the file when its modification time or size changed,
    so a file replaced in place (atomically) is picked up without a restart.

    Args:
      name: the table's name in statements.
      path: the CSV file.
      column_types: optional name -> Arrow type overrides (e.g. keep ids as strings).
      flag: names the origin in errors.
    """

    def __init__(self, name: str, path: str, column_types: Optional[dict[str, pa.DataType]] = None,
                 flag: str = "--lookup"):
        super().__init__(name)
        self.path = path
        self._types = dict(column_types or {})
        self._flag = flag
        self._stamp: Optional[tuple[float, int]] = None
        self._schema: Optional[pa.Schema] = None

    def _read(self) -> pa.Table:
        try:
            stat = os.stat(self.path)
            table = pacsv.read_csv(self.path, convert_options=pacsv.ConvertOptions(
                column_types=self._types, strings_can_be_null=True))
        except FileNotFoundError:
            raise UserError(f"{self._flag} {self.name}: file not found: {self.path}") from None
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            raise UserError(f"{self._flag} {self.name}: cannot read {self.path} as CSV: "
                            f"{str(e).splitlines()[0]}") from None
        self._stamp = (stat.st_mtime, stat.st_size)
        if self._schema is not None and table.schema != self._schema:
            try:
                table = table.select(self._schema.names).cast(self._schema)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise RuntimeError(f"lookup {self.name}: {self.path} no longer fits its schema "
                                   f"{self._schema}: {e}") from e
        return table

    def schema(self) -> pa.Schema:
        if self._schema is None:
            self._schema = self._read().schema
        return self._schema

    def load(self) -> pa.Table:
        self.schema()
        return self._read()

    def refresh(self) -> Optional[pa.Table]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            _LOGGER.warning("Lookup %s: %s is gone; keeping the rows already loaded", self.name, self.path)
            return None
        if self._stamp == (stat.st_mtime, stat.st_size):
            return None
        return self._read()

    def describe(self) -> str:
        return f"csv {self.path}"


def _decode_key(key: Optional[bytes]) -> Optional[str]:
    if key is None:
        return None
    return bytes(key).decode("utf-8", errors="replace")


class KafkaLookup(Lookup):
    """A Kafka topic read as a table: the latest JSON value per message key; a null value deletes it.

    The consumer is assigned every partition (no consumer group, nothing
    committed) and reads from the beginning; `refresh()` polls what arrived
    since, for at most `refresh_budget` seconds. Values are decoded by
    `record_format` (a `beam_ml.formats` RecordFormat; default JSON objects);
    others are skipped and counted in `bad_records` (a lookup has no dead-letter
    output: its records are not the pipeline's input).

    Args:
      name: the table's name in statements.
      topic: the topic holding the table's changelog.
      bootstrap_servers: host:port list (or give client_config).
      client_config: a `beam_ml.io.kafka.KafkaClientConfig` (security settings).
      schema: the table's columns; inferred from the topic's current rows when None.
      key_column: a column that receives the decoded message key (overriding a
        field of that name in the value); None: values carry their key field.
      load_timeout: seconds the first full read may take.
      refresh_budget: seconds one refresh may spend polling.
      record_format: how the topic's values are decoded (default: JSON objects).
    """

    def __init__(self, name: str, topic: str, bootstrap_servers: Optional[str] = None,
                 client_config: Any = None, schema: Optional[pa.Schema] = None,
                 key_column: Optional[str] = None, load_timeout: float = 30.0,
                 refresh_budget: float = 1.0, flag: str = "--lookup", record_format: Any = None):
        super().__init__(name)
        self._format = record_format or JsonFormat()  # a beam_ml.formats.RecordFormat

        self.topic = topic
        config = (client_config or KafkaClientConfig()).with_overrides(bootstrap_servers=bootstrap_servers)
        try:
            self._config = config.validate()
        except ValueError as e:
            raise UserError(f"{flag} {name}: {e}") from None
        self._schema = schema
        self._key_column = key_column
        self._load_timeout = load_timeout
        self._refresh_budget = refresh_budget
        self._flag = flag
        self._consumer = None
        self._rows: dict[Optional[str], dict[str, Any]] = {}
        self.bad_records = 0

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_consumer"] = None
        state["_rows"] = {}
        return state

    def describe(self) -> str:
        return f"kafka topic {self.topic}"

    def open(self) -> None:
        if self._consumer is not None:
            return
        from kafka import KafkaConsumer, TopicPartition  # pylint: disable=import-outside-toplevel
        from kafka.errors import KafkaError  # pylint: disable=import-outside-toplevel

        kwargs = dict(self._config.client_kwargs())
        kwargs.update(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                      allow_auto_create_topics=False, fetch_max_wait_ms=50)
        try:
            consumer = KafkaConsumer(**kwargs)
        except KafkaError as e:
            raise UserError(f"{self._flag} {self.name}: cannot connect to Kafka at "
                            f"{self._config.bootstrap_servers}: {e}") from None
        deadline = time.monotonic() + min(self._load_timeout, 10.0)
        partitions = None
        while True:
            partitions = consumer.partitions_for_topic(self.topic)
            if partitions or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if not partitions:
            consumer.close()
            raise UserError(f"{self._flag} {self.name}: Kafka topic {self.topic!r} not found")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        self._consumer = consumer
        self._rows = {}
        self._poll(self._load_timeout, until_quiet=True)

    def _apply(self, record) -> bool:
        key = _decode_key(record.key)
        if record.value is None:
            return self._rows.pop(key, None) is not None
        try:
            value = self._format.decode(record.value)
        except ValueError as e:
            self.bad_records += 1
            _LOGGER.warning("Lookup %s: skipped %s/%d offset %d: %s", self.name, record.topic, record.partition,
                            record.offset, e)
            return False
        if self._key_column:
            value[self._key_column] = key
        self._rows[key] = value
        return True

    def _poll(self, budget: float, until_quiet: bool) -> bool:
        """Applies records for up to `budget` s; stops after an empty poll (two when `until_quiet`)."""
        deadline = time.monotonic() + budget
        changed, quiet = False, 0
        # An empty poll proves "nothing more" only if it outlasts the broker's fetch wait.
        poll_ms = int(self._consumer.config["fetch_max_wait_ms"]) * 2 + 100
        while time.monotonic() < deadline:
            batch = self._consumer.poll(timeout_ms=poll_ms, max_records=10000)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                quiet += 1
                if quiet >= (2 if until_quiet else 1):
                    break
                continue
            quiet = 0
            for r in sorted(records, key=lambda r: (r.partition, r.offset)):
                changed = self._apply(r) or changed
        return changed

    def _table(self) -> pa.Table:
        rows = list(self._rows.values())
        schema = self._schema
        if schema is None:
            return pa.Table.from_pylist(rows)
        try:
            return pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        good = []
        for key, row in list(self._rows.items()):  # find the values that do not fit, drop them
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                self.bad_records += 1
                del self._rows[key]
                _LOGGER.warning("Lookup %s: key %r does not fit the schema (%s); dropped", self.name, key, e)
        return pa.Table.from_pylist(good, schema=schema)

    def schema(self) -> pa.Schema:
        if self._schema is None:
            was_open = self._consumer is not None
            self.open()
            if not self._rows:
                if not was_open:
                    self.close()
                raise UserError(f"{self._flag} {self.name}: topic {self.topic!r} is empty, so its columns "
                                "are unknown; give the lookup a schema")
            self._schema = pa.Table.from_pylist(list(self._rows.values())).schema
            if not was_open:
                self.close()
        return self._schema

    def load(self) -> pa.Table:
        self.open()
        self.schema()
        return self._table()

    def refresh(self) -> Optional[pa.Table]:
        self.open()
        if self._poll(self._refresh_budget, until_quiet=False):
            return self._table()
        return None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None


# ------------------------------------------------------------------ --lookup=NAME=bq:TABLE
class BigQueryLookup(Lookup):
    """A BigQuery table joined by a cleaning statement (`--lookup=users=bq:project:dataset.users`).

    Read whole with google-cloud-bigquery (`list_rows(...).to_arrow()`, the REST
    API, so it works against an emulator too) when the statement is prepared and
    on each worker; `refresh()` re-reads it when the table's modification time or
    row count changed. Pickles as (name, table, endpoint): each worker makes its
    own client in `open()`.

    Args:
      name: the table's name in statements.
      table: PROJECT:DATASET.TABLE (or PROJECT.DATASET.TABLE).
      endpoint: a beam_ml.io.bigquery.BigQueryEndpoint (--bigquery_endpoint: an emulator), or None for Google's.
      flag: names the origin in errors.
    """

    def __init__(self, name: str, table: str, endpoint: Any = None, flag: str = "--lookup"):
        super().__init__(name)
        self._flag = flag
        self.project, self.dataset, self.table_name = parse_table(table, f"{flag} {name}")
        self.endpoint = endpoint
        self._client = None
        self._stamp = None
        self._schema = None

    @property
    def table_id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table_name}"

    def open(self) -> None:
        if self._client is None:
            if self.endpoint is not None:

                self._client = endpoint_client(self.endpoint.rest, self.project)
            else:
                from google.cloud import bigquery  # pylint: disable=import-outside-toplevel

                self._client = bigquery.Client(project=self.project)

    def _stamp_now(self):
        t = self._client.get_table(self.table_id)
        return (t.modified, t.num_rows)

    def load(self) -> pa.Table:
        from google.api_core import exceptions  # pylint: disable=import-outside-toplevel

        self.open()
        try:
            self._stamp = self._stamp_now()
            table = self._client.list_rows(self.table_id).to_arrow(create_bqstorage_client=False)
        except exceptions.NotFound:
            raise UserError(f"{self._flag} {self.name}: BigQuery table {self.table_id} not found") from None
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.select(self._schema.names).cast(self._schema)
        return table

    def schema(self) -> pa.Schema:
        if self._schema is None:
            self.load()
        return self._schema

    def refresh(self) -> Optional[pa.Table]:
        self.open()
        if self._stamp is not None and self._stamp_now() == self._stamp:
            return None
        return self.load()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def describe(self) -> str:
        return f"bq:{self.project}:{self.dataset}.{self.table_name}"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_client"] = None
        return state


# --------------------------------------------------------------------------
# --lookup=NAME=SOURCE


_SCHEMES: dict[str, Callable[..., Lookup]] = {}


def register_scheme(scheme: str, factory: Callable[..., Lookup]) -> None:
    """Lets `--lookup=NAME=<scheme>:<rest>` build a lookup with `factory(name, rest, **options)`.

    The hook for sources implemented elsewhere, e.g. ``register_scheme("bq", ...)``
    by the BigQuery IO.
    """
    _SCHEMES[scheme.lower()] = factory


def parse_lookup_flag(value: str, flag: str = "--lookup") -> tuple[str, str]:
    """'users=users.csv' -> ('users', 'users.csv')."""
    name, sep, source = value.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise UserError(f"{flag}: expected NAME=SOURCE (e.g. users=users.csv or users=kafka:users), got {value!r}")
    return name, source


def _kafka_factory(name: str, topic: str, **options: Any) -> Lookup:
    return KafkaLookup(name, topic, bootstrap_servers=options.get("bootstrap_servers"),
                       client_config=options.get("client_config"), flag=options.get("flag", "--lookup"),
                       record_format=options.get("record_format"))


def _bq_factory(name: str, table: str, **options: Any) -> Lookup:
    return BigQueryLookup(name, table, endpoint=options.get("bigquery_endpoint"), flag=options.get("flag", "--lookup"))


register_scheme("kafka", _kafka_factory)
register_scheme("bq", _bq_factory)


def lookup_from_flag(value: str, flag: str = "--lookup", **options: Any) -> Lookup:
    """Builds the lookup a `--lookup=NAME=SOURCE` flag names.

    SOURCE is a CSV path, or ``kafka:<topic>`` (needs ``bootstrap_servers=`` or
    ``client_config=`` in options), or ``<scheme>:<rest>`` of a registered scheme.

    Raises:
      UserError: a malformed value, an unknown scheme, a missing file.
    """
    name, source = parse_lookup_flag(value, flag)
    scheme, sep, rest = source.partition(":")
    if sep and scheme.lower() in _SCHEMES and len(scheme) > 1:  # 'C:\\...' is a path
        return _SCHEMES[scheme.lower()](name, rest, flag=flag, **options)
    if sep and "://" in source and not source.startswith("file://"):
        raise UserError(f"{flag} {name}: unsupported source {source!r} (a CSV path, kafka:TOPIC, "
                        f"or one of {', '.join(sorted(_SCHEMES))}:...)")
    path = source[len("file://"):] if source.startswith("file://") else source
    if not os.path.isfile(path):
        raise UserError(f"{flag} {name}: file not found: {path}")
    return CsvLookup(name, path, flag=flag)
