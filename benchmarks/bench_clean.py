"""Per-batch cost of a typical KSQL cleaning statement (beam_ml.clean) on the fraud schema.

    python -m benchmarks.bench_clean
    python -m benchmarks.bench_clean --rows=200000 --batch_rows=10000 --rounds=5 --work_dir=out/bench_clean

The input is the bundled fraud dataset (``datasets.materialize("fraud",
rows=200000)``: Time, V1..V28, Amount, Class) read once with pyarrow, plus the
two columns the issue's statements use and the CSV lacks -- ``userid`` (one
of 1,200 ids; a 1,000-row ``users`` lookup knows 1,000 of them) and ``User``
(a first name) -- and 1% of ``Class`` set to NULL. The typical statement:

    SELECT c.V1, ..., c.V28, IFNULL(c.Amount, 0) AS Amount, c.Class,     -- drop Time, userid
           MASK_LEFT(c.User, 2) AS User, u.CITY                           -- mask, enrich
    FROM events c LEFT JOIN users u ON c.userid = u.userid                -- one join
    WHERE c.Class IS NOT NULL                                             -- filter

Measured: wall time of `Engine.run` per batch (``--batch_rows`` rows, one
DuckDB connection, threads=1, as in the DoFn), median and min over
``--rounds`` passes over all batches, interleaved with the clause-by-clause
variants so machine load hits all alike. "No SQL" costs nothing, so the
overhead is that time, also given relative to the README's preprocessing
throughput (``--reference_rows_per_s``, 17,730 rows/s for
``pipelines.train --preprocess_only`` on 200k rows) and, for small streaming
batches (``--stream_batch_rows``), to stream_predict's 4,281 events/s
(``--reference_events_per_s``).

Every pass checks its outputs before it counts: rows in = out + filtered +
dead, no dead letters, the expected number of rows kept, and masked names.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from beam_ml import datasets
from beam_ml.clean import Engine, Statement

_NAMES = np.array(["Hans", "Anna", "Li", "Maria", "Olu", "Sven", "Mia", "Noah", "Emma", "Jonas"])


def fraud_events(work_dir: str, rows: int, seed: int = 7) -> pa.Table:
    """The fraud CSV as typed Arrow columns, plus userid/User/__line__ and 1% NULL Class."""
    path = datasets.materialize("fraud", os.path.join(work_dir, "data"), rows=rows)
    t = pacsv.read_csv(path).combine_chunks()
    n = t.num_rows
    rng = np.random.default_rng(seed)
    cls = t.column("Class").to_numpy(zero_copy_only=False).astype(np.float64)
    cls[rng.random(n) < 0.01] = np.nan
    t = t.set_column(t.column_names.index("Class"), "Class",
                     pa.array(cls, from_pandas=True).cast(pa.int64()))
    t = t.append_column("userid", pa.array(np.char.add("u", rng.integers(0, 1200, n).astype(str))))
    t = t.append_column("User", pa.array(_NAMES[rng.integers(0, len(_NAMES), n)]))
    return t.append_column("__line__", pa.array(np.arange(2, n + 2, dtype=np.int64)))


def users_table() -> pa.Table:
    ids = np.arange(1000)
    return pa.table({"userid": np.char.add("u", ids.astype(str)),
                     "CITY": np.where(ids % 3 == 0, "Basic ", "Premium ").astype(object) + ids.astype(str)})


def statements() -> dict[str, str]:
    v = ", ".join(f"c.V{i}" for i in range(1, 29))
    join = "FROM events c LEFT JOIN users u ON c.userid = u.userid"
    return {
        "typical (all of the below)": f"SELECT {v}, IFNULL(c.Amount, 0) AS Amount, c.Class, "
                                      f"MASK_LEFT(c.User, 2) AS User, u.CITY {join} WHERE c.Class IS NOT NULL",
        "drop (select 30 of 34 columns)": f"SELECT {v}, c.Amount, c.Class FROM events c",
        "filter (WHERE Class IS NOT NULL)": "SELECT c.Class FROM events c WHERE c.Class IS NOT NULL",
        "IFNULL(Amount, 0)": "SELECT IFNULL(c.Amount, 0) AS Amount FROM events c",
        "MASK_LEFT(User, 2)": "SELECT MASK_LEFT(c.User, 2) AS User FROM events c",
        "LEFT JOIN users (1,000 rows)": f"SELECT u.CITY {join}",
    }


def _check(name: str, result, batch: pa.Table) -> None:
    assert result.rows_in == result.rows_out + result.filtered + len(result.dead), name
    assert not result.dead, (name, result.dead[:1])
    if "WHERE" in statements()[name]:
        want = batch.num_rows - batch.column("Class").null_count
        assert result.rows_out == want, (name, result.rows_out, want)
    else:
        assert result.rows_out == batch.num_rows, name
    if "MASK_LEFT" in statements()[name]:
        users = result.table.column("User").to_pylist()
        assert all(u[:2] in ("Xx", "X") for u in users[:50]), users[:5]


def measure(table: pa.Table, batch_rows: int, rounds: int) -> dict[str, dict]:
    users = users_table()
    batches = [table.slice(i, batch_rows) for i in range(0, table.num_rows, batch_rows)]
    engines = {}
    for name, sql in statements().items():
        stmt = Statement.prepare(sql, table.schema, {"users": users.schema}, position_column="__line__")
        engines[name] = Engine(stmt, {"users": users} if stmt.lookup_schemas else None)
    per_batch: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            for b in batches:
                t0 = time.perf_counter()
                result = engine.run(b)
                per_batch[name].append(time.perf_counter() - t0)
                _check(name, result, b)
    for engine in engines.values():
        engine.close()
    return {name: {"median_ms": statistics.median(v) * 1e3, "min_ms": min(v) * 1e3,
                   "rows_per_s": batch_rows / statistics.median(v)} for name, v in per_batch.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch_rows", type=int, default=10_000)
    parser.add_argument("--stream_batch_rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reference_rows_per_s", type=float, default=17_730.0)
    parser.add_argument("--reference_events_per_s", type=float, default=4_281.0)
    parser.add_argument("--work_dir", default="out/bench_clean")
    args = parser.parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    table = fraud_events(args.work_dir, args.rows)
    report = {"rows": table.num_rows, "batch_rows": args.batch_rows, "cpus": os.cpu_count(),
              "load_average": os.getloadavg()}
    batch = measure(table, args.batch_rows, args.rounds)
    stream = measure(table.slice(0, 20 * args.stream_batch_rows), args.stream_batch_rows, args.rounds)
    report["batch"], report["stream"] = batch, stream
    ref_batch_ms = args.batch_rows / args.reference_rows_per_s * 1e3
    ref_stream_ms = args.stream_batch_rows / args.reference_events_per_s * 1e3
    print(f"{table.num_rows} fraud rows; load average {report['load_average'][0]:.1f} on {report['cpus']} CPUs")
    print(f"\n{args.batch_rows}-row batches (preprocessing spends {ref_batch_ms:.0f} ms per batch at "
          f"{args.reference_rows_per_s:,.0f} rows/s):")
    print("| statement | median ms/batch | min ms/batch | rows/s | vs preprocessing |\n|---|---|---|---|---|")
    for name, r in batch.items():
        print(f"| {name} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['rows_per_s']:,.0f} | "
              f"+{r['median_ms'] / ref_batch_ms:.1%} |")
    s = stream["typical (all of the below)"]
    print(f"\n{args.stream_batch_rows}-row batches (stream_predict spends {ref_stream_ms:.0f} ms per "
          f"{args.stream_batch_rows} events at {args.reference_events_per_s:,.0f} events/s): typical statement "
          f"{s['median_ms']:.1f} ms median ({s['min_ms']:.1f} min) = +{s['median_ms'] / ref_stream_ms:.1%}")
    report["overhead_vs_preprocessing"] = batch["typical (all of the below)"]["median_ms"] / ref_batch_ms
    report["overhead_vs_stream_predict"] = s["median_ms"] / ref_stream_ms
    with open(os.path.join(args.work_dir, "bench_clean.json"), "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
