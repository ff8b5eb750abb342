"""stream_predict on Confluent wire-format Avro events vs the same events as JSON (issue 25's goal: >= 1.0x).

    python -m benchmarks.bench_avro                     # 50,000 events each, two runs per format
    python -m benchmarks.bench_avro --quick             # 500 events: checks the machinery, not the speed
    python -m benchmarks.bench_avro --model_dir=out/fraud/model --events=20000

One run starts its own Tansu broker and test schema registry
(`beam_ml.testing.schema_registry`) on 127.0.0.1, trains (or takes) the fraud
model, and produces the same ``--events`` fraud events twice with
``pipelines.produce``: as JSON to one topic, and with
``--output_format=avro_confluent`` (magic byte, schema id, Avro body; the
schema registered under ``<topic>-value``) to another. Then
``pipelines.stream_predict`` scores each topic in its own process, with the
same flags but ``--value_format=avro_confluent --schema_registry_url=...`` for
the Avro topic, writing JSON predictions either way (bench_stream's machinery:
`run_ours`, `check_predictions`). ``--repeats`` (2) runs alternate json, avro,
json, avro...; each format's median run is reported, with every run's rate.

Measured as in benchmarks/bench_stream.py: events/s = predictions / (last -
first ``processing_ts``), and CPU ms per 1000 events of the scorer's process.
Every prediction is checked (each event once, score = the offline model's).
Prints events/s of each and the ratio avro/json; writes ``<work_dir>/bench_avro.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from benchmarks.bench_stream import _log, _median_run, _new_topic, bench_inputs, check_predictions, machine, run_ours

__all__ = ["run", "main"]

FORMATS = ("json", "avro_confluent")
GOAL = 1.0  # avro_confluent / json events/s (issue 25)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_avro", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=50000, help="events per format")
    p.add_argument("--quick", action="store_true", help="500 events, short timeouts: the machinery, not the speed")
    p.add_argument("--work_dir", default="out/bench_avro")
    p.add_argument("--model_dir", default=None, help="serve this model instead of training one")
    p.add_argument("--max_batch_size", type=int, default=256, help="records per poll and model call")
    p.add_argument("--max_run_seconds", type=float, default=600.0, help="cap on each scoring run")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per format, alternating json and avro (the median is reported): load from other "
                        "users of the machine lands on one run of each rather than on all runs of one")
    args = p.parse_args(list(argv))
    if args.quick:
        args.events = min(args.events, 500)
        args.max_run_seconds = min(args.max_run_seconds, 180.0)
        args.repeats = 1
    # run_ours' other knobs (bench_stream's flags), at their defaults.
    args.checkpoint_interval = args.poll_timeout = None
    return args


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the benchmark; returns (and writes) {'config', 'machine', 'formats': {json|avro_confluent: ...},
    'ratio'}."""
    args = _parse_args(argv or [])
    from beam_ml.testing import TansuBroker
    from beam_ml.testing.schema_registry import SchemaRegistryServer
    from pipelines import produce

    work_dir, log_dir, model_dir, csv_path, pool, offline = bench_inputs(args.work_dir, args.model_dir, args.events)
    ids = [i for i, _ in pool[:args.events]]
    report: dict = {"config": vars(args), "model_dir": model_dir, "formats": {}, "ratio": None, "machine": machine()}
    with TansuBroker() as broker, SchemaRegistryServer() as registry:
        bootstrap = broker.bootstrap_servers
        registry_flag = f"--schema_registry_url={registry.url}"
        topics, runs = {}, {fmt: [] for fmt in FORMATS}
        for fmt in FORMATS:
            topics[fmt] = _new_topic(bootstrap, f"bench-{fmt}")
            extra = [] if fmt == "json" else ["--output_format=avro_confluent", registry_flag]
            report.setdefault("produce", {})[fmt] = produce.run(
                [f"--input={csv_path}", f"--topic={topics[fmt]}", f"--bootstrap_servers={bootstrap}",
                 f"--limit={args.events}", *extra])
        for fmt in [f for _ in range(args.repeats) for f in FORMATS]:
            _log(f"stream_predict on {fmt} events: throughput over {args.events} events "
                 f"(run {len(runs[fmt]) + 1}/{args.repeats})")
            flags = [] if fmt == "json" else ["--value_format=avro_confluent", registry_flag]
            try:
                r = run_ours(bootstrap, model_dir, topics[fmt], args.events, args, log_dir,
                             name=f"{fmt}{len(runs[fmt]) + 1}", extra=flags)
                r["problems"] = check_predictions(r.pop("predictions"), ids, offline)
                if r.get("dead"):
                    r["problems"].append(f"{r['dead']} dead letters from good events")
            except Exception as e:  # one run failing must not hide the other's numbers
                r = {"problems": [f"run failed: {e!r}"[:2000]]}
            runs[fmt].append(r)
            _log(f"{fmt}: {r.get('throughput')} problems={r['problems']}")
        report["formats"] = {fmt: _median_run(rs) for fmt, rs in runs.items()}
        report["registry_requests"] = len(registry.requests)
    report["machine"]["loadavg_end"] = os.getloadavg()
    rates = {f: (report["formats"][f].get("throughput") or {}).get("events_per_s")
             for f in FORMATS if not report["formats"][f]["problems"]}
    if rates.get("json") and rates.get("avro_confluent"):
        ratio = round(rates["avro_confluent"] / rates["json"], 2)
        report["ratio"] = f"{ratio}x (goal >= {GOAL}x: {'met' if ratio >= GOAL else 'NOT met'})"
    path = os.path.join(work_dir, "bench_avro.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=str)
    print(_table(report), flush=True)
    _log(f"report: {path}; load average {report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']} "
         f"on {os.cpu_count()} shared CPUs")
    return report


def _table(report: dict) -> str:
    lines = [f"{'stream_predict input':<24} {'events/s':>10} {'CPU ms/1000':>12} {'events':>8}  {'every run':<18} "
             "problems"]
    for fmt, r in report["formats"].items():
        tp = r.get("throughput") or {}
        rate, cpu = tp.get("events_per_s"), tp.get("cpu_ms_per_1000")
        every = ", ".join(f"{x:.0f}" for x in r.get("runs_events_per_s", []))
        lines.append(f"{fmt:<24} {rate if rate is not None else '-':>10} {cpu if cpu is not None else '-':>12} "
                     f"{tp.get('events', '-'):>8}  {every:<18} {'; '.join(r['problems']) or 'none'}")
    lines.append(f"avro_confluent / json events/s: {report['ratio'] or 'n/a (a run failed)'}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    report = run(sys.argv[1:] if argv is None else argv)
    if any(r.get("problems") for r in report["formats"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
