"""CSV reader throughput: gzip and dirty files against the clean read, and one big file on 1 vs 2 workers.

    python -m benchmarks.bench_read
    python -m benchmarks.bench_read --rows=20000 --big_mb=64 --repeats=1 --work_dir=/tmp/bench

Part 1 (``read``): the credit-card-schema file of ``--rows`` rows
(``beam_ml.datasets.materialize('fraud', ...)``, 200,000 by default, 56 MB),
read by ``ReadCsvBatches`` in three forms:

* ``clean``: the file as generated (uncompressed, comma-separated UTF-8);
* ``gzip``: the same bytes gzipped (``.csv.gz``, unsplittable, decompressed
  by Beam's CompressedFile);
* ``dirty``: the same file with 1% of its rows damaged, in equal shares:
  Latin-1 bytes in a UTF-8 file, a stray quote at the start of the row, a
  missing field, a non-number, an unknown label; plus a blank line after
  every 1,000th row.

Each form is read by a pipeline (``--runner=DirectRunner``, in-process,
one worker) whose only step after the read sums the rows of the batches;
the time is the wall clock of the whole pipeline, construction included
(about 2 s of it is the local runner's fixed cost). CPU seconds of the
process are reported beside wall-clock ones: on a shared machine they move
less with other people's load.
Each form is also read in this process, without Beam, by ``read_csv_file``
(the code each worker runs per byte range): the reader's own cost. Forms are
run in turn, ``--repeats`` times, and the median time counts.

Part 2 (``scale``): a file of about ``--big_mb`` MB (1 GB by default: the
clean file's rows repeated) read by ``ReadCsvBatches`` with
``--direct_running_mode=multi_processing --direct_num_workers=N`` for N = 1
and 2: one file split into 64 MB byte ranges, read by worker processes.
Besides the whole pipeline's wall clock (which includes several seconds of
worker start-up, mostly each worker importing Beam), the read phase is
timed: from the first batch any worker emits to the last one.

Every run checks its outputs before it counts: the rows summed in the
pipeline and the READ counters must equal what the file holds (good rows,
dead rows, blank lines), or the benchmark fails. Results are printed with
ratios from this one run and written to ``<work_dir>/bench_read.json``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import datasets
from beam_ml.io.csv import ReadCsvBatches, read_csv_file
from beam_ml.metrics import READ, query_counter
from beam_ml.spec import DatasetSpec, infer_spec

LABEL = "Class"
DIRT_KINDS = ("latin1_bytes", "stray_quote", "missing_field", "not_a_number", "unknown_label")


def make_dirty(clean_path: str, out_path: str, fraction: float = 0.01, blank_every: int = 1000) -> dict:
    """Writes a copy of `clean_path` with `fraction` of its rows damaged; returns the expected counts."""
    with open(clean_path, "rb") as f:
        header, *rows = f.read().rstrip(b"\n").split(b"\n")
    every = round(1 / fraction)
    out, dead, blank = [header], 0, 0
    for i, row in enumerate(rows):
        if i % every == every // 2:
            kind = DIRT_KINDS[(i // every) % len(DIRT_KINDS)]
            fields = row.split(b",")
            if kind == "latin1_bytes":
                fields[1] = fields[1] + "é".encode("latin-1")
            elif kind == "stray_quote":
                fields[0] = b'"' + fields[0]
            elif kind == "missing_field":
                fields.pop(5)
            elif kind == "not_a_number":
                fields[-2] = b"12.5.0"
            else:
                fields[-1] = b"2"
            row = b",".join(fields)
            dead += 1
        out.append(row)
        if i % blank_every == blank_every - 1:
            out.append(b"")
            blank += 1
    with open(out_path, "wb") as f:
        f.write(b"\n".join(out) + b"\n")
    return {"lines_in": len(rows), "rows_good": len(rows) - dead, "rows_dead": dead, "blank_lines": blank}


def make_big(clean_path: str, out_path: str, target_bytes: int) -> dict:
    """Writes the clean file's rows repeated to about `target_bytes`; returns the expected counts."""
    with open(clean_path, "rb") as f:
        header = f.readline()
        body = f.read()
    copies = max(1, round((target_bytes - len(header)) / len(body)))
    with open(out_path, "wb") as f:
        f.write(header)
        for _ in range(copies):
            f.write(body)
    rows = body.count(b"\n") * copies
    return {"lines_in": rows, "rows_good": rows, "rows_dead": 0, "blank_lines": 0}


def run_pipeline(path: str, spec: DatasetSpec, expected: dict, args: Sequence[str],
                 phases: Optional[dict] = None) -> tuple[float, float]:
    """Reads `path` with ReadCsvBatches; checks rows and counters; returns (wall, CPU of this process) seconds.

    With `phases`, sets 'first'/'last' (epoch seconds of the first and last batch any worker
    emitted) and 'rows_per_worker', from Beam metrics (the workers may be other processes).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", *args]))
    read = pipeline | "ReadCsv" >> ReadCsvBatches(path, spec)
    _ = (read["rows"]
         | "StampBatches" >> beam.Map(_stamp)
         | "Sum" >> beam.CombineGlobally(sum)
         | "Check" >> beam.Map(_check_sum, expected["rows_good"]))
    result = pipeline.run()
    result.wait_until_finish()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    got = {k: query_counter(result, READ, k) for k in expected}
    if got != expected:
        raise AssertionError(f"{path}: counters {got} != expected {expected}")
    if phases is not None:
        found = result.metrics().query(MetricsFilter().with_namespace(_BENCH))
        times = [d.committed or d.attempted for d in found["distributions"] if d.key.metric.name == "batch_ms"]
        phases["first"] = min(t.min for t in times) / 1000
        phases["last"] = max(t.max for t in times) / 1000
        per_worker: dict = {}
        for c in found["counters"]:
            if c.key.metric.name.startswith("rows_worker_"):
                name = c.key.metric.name
                per_worker[name] = per_worker.get(name, 0) + int(c.committed or c.attempted or 0)
        phases["rows_per_worker"] = sorted(per_worker.values())
    return seconds, cpu


_BENCH = "bench_read"


def _stamp(batch) -> int:
    beam.metrics.Metrics.distribution(_BENCH, "batch_ms").update(int(time.time() * 1000))
    beam.metrics.Metrics.counter(_BENCH, f"rows_worker_{os.getpid()}").inc(batch.num_rows)
    return batch.num_rows


def _check_sum(total: int, expected: int) -> int:
    if total != expected:
        raise AssertionError(f"the pipeline read {total} good rows, expected {expected}")
    return total


def run_reader(path: str, spec: DatasetSpec, expected: dict) -> tuple[float, float]:
    """Reads `path` in this process with read_csv_file; checks the counts; returns (wall, CPU) seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    got = dict.fromkeys(expected, 0)
    for r in read_csv_file(path, spec):
        got["lines_in"] += r.lines
        got["rows_good"] += r.batch.num_rows if r.batch is not None else 0
        got["rows_dead"] += len(r.dead)
        got["blank_lines"] += r.blank
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if got != expected:
        raise AssertionError(f"{path}: read {got}, expected {expected}")
    return seconds, cpu


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the clean/gzip/dirty files")
    parser.add_argument("--big_mb", type=int, default=1024, help="size of the file read by 1 and 2 workers")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each read form (the median counts)")
    parser.add_argument("--only", default="read,scale", help="parts to run: read, scale")
    parser.add_argument("--work_dir", default=None, help="where files go (default: a temp dir, removed)")
    return parser.parse_args(argv)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = _parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_read_")
    os.makedirs(work_dir, exist_ok=True)
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_before": os.getloadavg()}, "rows": args.rows}
    try:
        clean = datasets.materialize("fraud", work_dir, rows=args.rows)
        spec = infer_spec(clean, LABEL)
        rows = {"lines_in": args.rows, "rows_good": args.rows, "rows_dead": 0, "blank_lines": 0}
        if "read" in parts:
            gz = clean + ".gz"
            with open(clean, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            dirty = os.path.join(work_dir, "fraud_dirty.csv")
            forms = {"clean": (clean, rows), "gzip": (gz, rows), "dirty": (dirty, make_dirty(clean, dirty))}
            args_1 = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
            run_pipeline(clean, spec, rows, args_1)  # warm-up: imports, page cache
            times = {name: {"pipeline": [], "reader": []} for name in forms}
            for _ in range(max(1, args.repeats)):
                for name, (path, expected) in forms.items():
                    times[name]["pipeline"].append(run_pipeline(path, spec, expected, args_1))
                    times[name]["reader"].append(run_reader(path, spec, expected))
            read = {}
            for name, (path, expected) in forms.items():
                read[name] = {"file_mb": round(os.path.getsize(path) / 2**20, 1), **expected}
                for how in ("pipeline", "reader"):
                    wall = statistics.median(t for t, _ in times[name][how])
                    cpu = statistics.median(c for _, c in times[name][how])
                    read[name][how] = {"seconds": round(wall, 3), "rows_per_s": round(expected["lines_in"] / wall),
                                       "cpu_seconds": round(cpu, 3),
                                       "rows_per_cpu_s": round(expected["lines_in"] / cpu),
                                       "runs": [[round(t, 3), round(c, 3)] for t, c in times[name][how]]}
            report["read"] = read
            report["read_ratios"] = {
                f"{form}/clean ({how}, {per})": _ratio(read[form][how][key], read["clean"][how][key])
                for form in ("gzip", "dirty") for how in ("pipeline", "reader")
                for per, key in (("wall", "rows_per_s"), ("cpu", "rows_per_cpu_s"))}
        if "scale" in parts:
            big = os.path.join(work_dir, "fraud_big.csv")
            expected = make_big(clean, big, args.big_mb << 20)
            run_reader(big, spec, expected)  # warm-up: the file into the page cache
            scale = {"file_mb": round(os.path.getsize(big) / 2**20, 1), "rows": expected["lines_in"]}
            for workers in (1, 2):
                phases: dict = {}
                s, _ = run_pipeline(big, spec, expected, ["--direct_running_mode=multi_processing",
                                                          f"--direct_num_workers={workers}"], phases=phases)
                # The read phase: from the first batch any worker emitted to the last one.
                scale[f"workers_{workers}"] = {
                    "seconds": round(s, 3), "rows_per_s": round(expected["lines_in"] / s),
                    "read_phase_seconds": round(phases["last"] - phases["first"], 3),
                    "rows_per_worker": phases["rows_per_worker"]}
            scale["speedup_2_vs_1"] = _ratio(scale["workers_1"]["seconds"], scale["workers_2"]["seconds"])
            scale["read_phase_speedup_2_vs_1"] = _ratio(scale["workers_1"]["read_phase_seconds"],
                                                        scale["workers_2"]["read_phase_seconds"])
            report["scale"] = scale
            os.remove(big)
        report["machine"]["load_after"] = os.getloadavg()
        with open(os.path.join(work_dir, "bench_read.json"), "w") as f:
            json.dump(report, f, indent=2)
        _print(report)
        return report
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


def _print(report: dict) -> None:
    if "read" in report:
        print(f"\nReadCsvBatches, {report['rows']:,} rows (fraud schema); median of runs")
        print(f"{'form':<7} {'MB':>6} {'dead':>6} {'blank':>6} | {'pipeline s':>10} {'rows/s':>9} "
              f"{'rows/cpu-s':>10} | {'reader s':>8} {'rows/s':>9} {'rows/cpu-s':>10}")
        for name, r in report["read"].items():
            p, q = r["pipeline"], r["reader"]
            print(f"{name:<7} {r['file_mb']:>6} {r['rows_dead']:>6} {r['blank_lines']:>6} | {p['seconds']:>10} "
                  f"{p['rows_per_s']:>9,} {p['rows_per_cpu_s']:>10,} | {q['seconds']:>8} {q['rows_per_s']:>9,} "
                  f"{q['rows_per_cpu_s']:>10,}")
        for k, v in report["read_ratios"].items():
            goal = 0.7 if k.startswith("gzip") else 0.8
            print(f"  {k}: {v}  (goal >= {goal})")
    if "scale" in report:
        s = report["scale"]
        print(f"\nOne {s['file_mb']} MB file ({s['rows']:,} rows), multi_processing DirectRunner")
        for w in (1, 2):
            r = s[f"workers_{w}"]
            print(f"  {w} worker(s): {r['seconds']} s, {r['rows_per_s']:,} rows/s; read phase "
                  f"{r['read_phase_seconds']} s; rows per worker {r['rows_per_worker']}")
        print(f"  2 vs 1: {s['speedup_2_vs_1']}x whole pipeline, {s['read_phase_speedup_2_vs_1']}x read phase "
              f"(goal >= 1.6)")
    m = report["machine"]
    print(f"\nload average before {tuple(round(x, 2) for x in m['load_before'])}, "
          f"after {tuple(round(x, 2) for x in m.get('load_after', ()))}, {m['cpus']} CPUs")


if __name__ == "__main__":
    main()
