"""The monitor's pages: a live dashboard of a monitoring topic, or a static drift report of a CSV.

    # live: records that stream_predict --monitor --monitor_topic=fraud-monitor writes
    python -m pipelines.monitor --monitor_topic=fraud-monitor --bootstrap_servers=127.0.0.1:9092 \\
        --model_dir=out/fraud/model --port=8080
    # live, from what --monitor_table=proj:ds.monitor wrote (polled every --poll_interval=2 s)
    python -m pipelines.monitor --monitor_table=proj:ds.monitor --model_dir=out/fraud/model --port=8080
    # static: new data against the training data, as one HTML file (the same metrics)
    python -m pipelines.monitor --model_dir=out/fraud/model --input=new.csv --output=drift.html
    # either, with a PNG of the page (headless chromium)
    python -m pipelines.monitor ... --screenshot=dashboard.png

--model_dir gives the live page the training score distribution (optional there).
--monitor_thresholds colours the heat map (and, for the static report, decides its alerts);
--monitor_window sets the static report's windows. See docs/MONITORING.md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Optional, Sequence

from aiohttp import web

from beam_ml import cli, fs
from beam_ml.errors import UserError
from beam_ml.jobs.settings import kafka_client_config
from beam_ml.model_store import resolve_version_dir
from beam_ml.monitoring.browser import screenshot
from beam_ml.monitoring.config import parse_thresholds, parse_window
from beam_ml.monitoring.dashboard import RecordStore, TopicRecordReader, dashboard_app
from beam_ml.monitoring.report import dashboard_html, drift_report_payload
from beam_ml.monitoring.stats import read_training_statistics
from beam_ml.monitoring.table import TableRecordReader
from beam_ml.options import KafkaOptions, MonitorOptions, MonitorReportOptions, parse_pipeline_options

__all__ = ["run", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(message.replace("argument ", "", 1))


def _own_flags(argv: Sequence[str]) -> tuple[argparse.Namespace, list]:
    """--port, --host, --screenshot, --seconds and --poll_interval (this tool's alone; the last: seconds between
    polls of --monitor_table); the rest are beam_ml's shared flags."""
    parser = _Parser(add_help=False, allow_abbrev=False)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--screenshot")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--poll_interval", type=float, default=2.0)
    own, rest = parser.parse_known_args(list(argv))
    if not 0 < own.port < 65536:
        raise UserError(f"--port: expected 1..65535, got {own.port}")
    if not own.poll_interval > 0:
        raise UserError(f"--poll_interval: expected seconds > 0, got {own.poll_interval}")
    return own, rest


def _static(opts, monitor, own, log) -> str:
    output = opts.output or "drift.html"
    payload = drift_report_payload(opts.model_dir, opts.input, parse_window(monitor.monitor_window),
                                   parse_thresholds(monitor.monitor_thresholds))
    fs.write_text(output, dashboard_html(payload))
    summary = payload["summary"]
    log(f"[beam_ml] drift report: {output} ({summary['events']['predictions']} rows scored, "
        f"{summary['events']['dead_total']} dead letters, {len(payload['records'])} windows, "
        f"{len(payload['alerts'])} window alerts; whole input: "
        f"{', '.join(summary['alerts']) or 'no alert'})")
    if own.screenshot:
        _screenshot(f"file://{os.path.abspath(output)}", own.screenshot, log)
    return output


def _screenshot(url: str, png: str, log) -> None:
    shot = screenshot(url, png)
    if shot.returncode != 0 or shot.console_errors:
        raise RuntimeError(f"chromium could not render {url}: {shot.console_errors or shot.stderr}")
    log(f"[beam_ml] screenshot: {png}")


def _live(options, opts, monitor, own, log):
    if bool(monitor.monitor_topic) == bool(monitor.monitor_table):
        raise UserError("--monitor_topic or --monitor_table (live dashboard; give one) or --model_dir with --input "
                        "(static report): required")
    training = None
    if opts.model_dir:
        stats = read_training_statistics(resolve_version_dir(opts.model_dir))
        training = stats.to_dict() if stats else None
    store = RecordStore()
    table = monitor.monitor_destination()
    if table is not None:  # polled every --poll_interval s
        reader = TableRecordReader(table, store.add_raw, interval=own.poll_interval)
    else:
        reader = TopicRecordReader(kafka_client_config(options).client_kwargs(), monitor.monitor_topic, store)
    watched = f"bigquery:{table.table}" if table is not None else monitor.monitor_topic
    app = dashboard_app(store, training=training, thresholds=parse_thresholds(monitor.monitor_thresholds),
                        title=f"beam_ml monitor: {watched}")

    async def serve():
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, own.host, own.port).start()
        url = f"http://{own.host}:{own.port}/"
        log(f"[beam_ml] dashboard of {watched}: {url}")
        try:
            if own.screenshot:  # wait for records (at most 60 s), take the picture, stop
                deadline = time.monotonic() + 60
                while store.seen == 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.3)
                await asyncio.to_thread(_screenshot, url, own.screenshot, log)
            elif own.seconds:
                await asyncio.sleep(own.seconds)
            else:
                await asyncio.Event().wait()  # until interrupted
        finally:
            await runner.cleanup()
            reader.stop()

    asyncio.run(serve())
    return store


def run(argv: Optional[Sequence[str]] = None, log=None):
    """The static report (returns its path) or the live dashboard (returns its RecordStore when it stops).

    Raises:
      UserError: a bad flag, model or input.
    """
    log = log or (lambda msg: print(msg, flush=True))
    own, rest = _own_flags(argv or [])
    options = parse_pipeline_options(rest, MonitorReportOptions, KafkaOptions, MonitorOptions,
                                     prog="python -m pipelines.monitor",
                                     description="Live monitoring dashboard of a monitoring topic, or a static "
                                                 "drift report of a CSV (--port, --host, --screenshot, --seconds, "
                                                 "--poll_interval are this tool's own flags).")
    opts, monitor = options.view_as(MonitorReportOptions), options.view_as(MonitorOptions)
    if opts.input:
        if not opts.model_dir:
            raise UserError("--model_dir: required with --input (the model whose training data is the reference)")
        return _static(opts, monitor, own, log)
    return _live(options, opts, monitor, own, log)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
