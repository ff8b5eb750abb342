"""The monitor's pages: the live dashboard, the static drift report (same page, data inline), and the
training statistics section of the training report.

    html = dashboard_html(payload, poll_url="/api/records")   # live: polls the JSON endpoint
    html = dashboard_html(payload)                             # static: a drift report, nothing fetched
    section = statistics_section_html(stats_dict)              # <section id="training-statistics"> (no script)

`payload` is {"title", "training": TrainingStatistics.to_dict(), "records": [monitoring records],
"alerts": [alert records], "thresholds": Thresholds.to_dict()}. Everything is one self-contained
file: inline CSS, inline script drawing inline SVG, no CDN and no other request than the poll.
"""
from __future__ import annotations

import csv
import html
import io
import json
from typing import Any, Optional

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.model_store import resolve_version_dir
from beam_ml.monitoring.config import PRIMARY, WindowSpec
from beam_ml.monitoring.stats import read_training_statistics
from beam_ml.monitoring.window import LabelJoin, WindowMonitor
from beam_ml.records import validate_record
from beam_ml.serving import ServingModel

__all__ = ["dashboard_html", "statistics_section_html", "histogram_svg", "drift_report_payload"]


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return _e(v)


def histogram_svg(counts: list, labels: Optional[list] = None, width: int = 220, height: int = 48) -> str:
    """A small bar chart of counts as inline SVG (no script)."""
    total = max(sum(counts), 1)
    top = max(max(counts) / total if counts else 0, 1e-9)
    n = max(len(counts), 1)
    w = width / n
    bars = []
    for i, c in enumerate(counts):
        h = (c / total) / top * (height - 2)
        title = f"{labels[i] if labels else i}: {c}"
        bars.append(f'<rect x="{i * w:.1f}" y="{height - h:.1f}" width="{max(w - 1, 0.5):.1f}" height="{h:.1f}" '
                    f'fill="#4c78a8"><title>{_e(title)}</title></rect>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            + "".join(bars) + "</svg>")


def statistics_section_html(stats: Optional[dict]) -> str:
    """The training report's section on what the monitor will compare serving data with."""
    head = '<section id="training-statistics"><h2>Training statistics (what the monitor compares with)</h2>'
    if not stats:
        return head + '<p class="note">No training statistics for this run.</p></section>'
    rows = []
    for name, f in stats["features"].items():
        rate = f["missing"] / f["rows"] if f["rows"] else None
        if f["kind"] == "numeric":
            labels = ["< min"] + [f"<= {e:.4g}" for e in f["edges"]] + ["> last edge"]
            detail = f"range [{_fmt(f['min'])}, {_fmt(f['max'])}], {len(f['counts'])} quantile bins"
            chart = histogram_svg(f["counts"], labels[1:])
        else:
            values = list(f["counts"].items())
            labels = [k for k, _ in values] + (["(other)"] if f["other"] else [])
            counts = [v for _, v in values] + ([f["other"]] if f["other"] else [])
            detail = ", ".join(f"{_e(k)} {v / max(f['rows'], 1):.1%}" for k, v in values[:6])
            chart = histogram_svg(counts, labels)
        rows.append(f"<tr><td>{_e(name)}</td><td>{_e(f['kind'])}</td><td>{f['rows']}</td><td>{_fmt(rate)}</td>"
                    f"<td>{detail}</td><td>{chart}</td></tr>")
    scores = stats.get("scores")
    score_html = ""
    if scores:
        score_html = (f"<p>Test split's score distribution ({len(scores['counts'])} bins of [0, 1]); predicted-positive "
                      f"rate {_fmt(scores['positive_rate'])} at threshold {_fmt(scores['threshold'])}:</p>"
                      + histogram_svg(scores["counts"], width=440, height=80))
    return (head + f"<p class=\"note\">Non-test rows: {stats['rows']}. Serving windows are compared with these "
            "(Jensen-Shannon divergence for numeric features, L-infinity distance for categorical ones, PSI for both; "
            "see docs/MONITORING.md). Stored in the model's <code>assets.extra/monitoring.json</code>.</p>"
            "<table><thead><tr><th>feature</th><th>kind</th><th>rows</th><th>missing rate</th><th>bins / top values"
            "</th><th>histogram</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + score_html
            + "</section>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1rem auto;max-width:1200px;color:#222;
padding:0 1rem;background:#fafafa}h1{font-size:1.4rem;margin:.3rem 0}h2{font-size:1.05rem;margin:.2rem 0 .4rem}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}.card{background:#fff;border:1px solid #ddd;
border-radius:6px;padding:10px}.wide{grid-column:1 / span 2}table{border-collapse:collapse;font-size:.85rem}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{
text-align:left}.note{color:#666;font-size:.85rem}.kpi{display:inline-block;margin-right:18px}.kpi b{font-size:1.3rem;
display:block}.alert{color:#b00020}svg text{font-size:10px;fill:#333}
"""

# The page's script: draws every chart from DATA (and, live, from the poll's answer). Plain DOM + SVG.
_SCRIPT = r"""
"use strict";
const NS = "http://www.w3.org/2000/svg";
function el(name, attrs, parent, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function svg(id, w, h) {
  const host = document.getElementById(id);
  host.textContent = "";
  return el("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img"}, host);
}
function fmt(v) {
  if (v === null || v === undefined) return "n/a";
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) || Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3);
}
function lineChart(id, series, yLabel) {
  const w = 540, h = 180, L = 46, B = 22, T = 8;
  const s = svg(id, w, h);
  const xs = series.flatMap(x => x.points.map(p => p[0])), ys = series.flatMap(x => x.points.map(p => p[1])).filter(v => v !== null);
  if (!xs.length || !ys.length) { el("text", {x: 10, y: 20}, s, "no data yet"); return; }
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y1 = Math.max(...ys) * 1.1 || 1;
  const X = v => L + (v - x0) / (x1 - x0) * (w - L - 10), Y = v => T + (1 - v / y1) * (h - T - B);
  el("line", {x1: L, y1: h - B, x2: w - 10, y2: h - B, stroke: "#999"}, s);
  el("line", {x1: L, y1: T, x2: L, y2: h - B, stroke: "#999"}, s);
  for (const f of [0, 0.5, 1]) el("text", {x: 2, y: Y(f * y1) + 3}, s, fmt(f * y1));
  el("text", {x: L, y: h - 6}, s, `window ${x0}`); el("text", {x: w - 70, y: h - 6}, s, `window ${x1}`);
  el("text", {x: L + 4, y: T + 10}, s, yLabel);
  series.forEach((ser, i) => {
    const pts = ser.points.filter(p => p[1] !== null).map(p => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    el("polyline", {points: pts, fill: "none", stroke: ser.color, "stroke-width": 2, "data-series": ser.name}, s);
    el("text", {x: w - 150, y: T + 12 + 12 * i, style: `fill:${ser.color}`}, s, ser.name);
  });
}
function scoreChart(id, training, live) {
  const w = 540, h = 180, B = 22, T = 8, n = Math.max(training.length, live.length, 1);
  const s = svg(id, w, h);
  const norm = a => { const t = a.reduce((x, y) => x + y, 0) || 1; return a.map(v => v / t); };
  const p = norm(training), q = norm(live), top = Math.max(...p, ...q, 1e-9);
  const bw = (w - 20) / n;
  for (let i = 0; i < n; i++) {
    const x = 10 + i * bw;
    const hp = (p[i] || 0) / top * (h - T - B), hq = (q[i] || 0) / top * (h - T - B);
    el("rect", {x: x, y: h - B - hp, width: bw / 2 - 1, height: hp, fill: "#4c78a8", "data-kind": "training"}, s).appendChild(
      el("title", {}, null, `training bin ${i}: ${(100 * (p[i] || 0)).toFixed(1)}%`));
    el("rect", {x: x + bw / 2, y: h - B - hq, width: bw / 2 - 1, height: hq, fill: "#e45756", "data-kind": "live"}, s).appendChild(
      el("title", {}, null, `last window bin ${i}: ${(100 * (q[i] || 0)).toFixed(1)}%`));
  }
  el("text", {x: 10, y: h - 6}, s, "score 0"); el("text", {x: w - 50, y: h - 6}, s, "score 1");
  el("text", {x: w - 200, y: 14, style: "fill:#4c78a8"}, s, "training (test split)");
  el("text", {x: w - 200, y: 28, style: "fill:#e45756"}, s, "last window");
}
function heat(t) {  // value / threshold -> colour: green below half, yellow near, red above
  const r = Math.max(0, Math.min(t, 2)) / 2;
  const hue = 120 * (1 - r);
  return `hsl(${hue.toFixed(0)},70%,${t >= 1 ? 45 : 60}%)`;
}
function heatMap(id, records, thresholds) {
  const feats = records.length ? Object.keys(records[records.length - 1].features).concat(["__score__"]) : [];
  const recs = records.slice(-60);
  const cw = 14, rh = 16, L = 150, T = 30;
  const w = Math.max(L + recs.length * cw + 20, 640), h = T + feats.length * rh + 30;
  const s = svg(id, w, h);
  if (!recs.length) { el("text", {x: 10, y: 20}, s, "no windows yet"); return; }
  recs.forEach((r, j) => {
    if (j % 10 === 0) el("text", {x: L + j * cw, y: 12}, s, `w${r.window.id}`);
    el("text", {x: L + j * cw + 2, y: 26, "font-size": 8}, s, r.model_version === null ? "" : `v${r.model_version}`);
  });
  feats.forEach((f, i) => {
    el("text", {x: 4, y: T + i * rh + 11}, s, f);
    recs.forEach((r, j) => {
      const fig = f === "__score__" ? r.scores : r.features[f];
      if (!fig) return;
      const metric = f === "__score__" ? "js" : (fig.kind === "numeric" ? "js" : "linf");
      const kind = f === "__score__" ? "score" : fig.kind;
      const th = threshold(thresholds, f, kind, metric);
      const v = fig[metric];
      const cell = el("rect", {x: L + j * cw, y: T + i * rh, width: cw - 1, height: rh - 1,
        fill: v === null || v === undefined ? "#eee" : heat(th ? v / th : 0), "data-feature": f,
        "data-value": v === null ? "" : v}, s);
      el("title", {}, cell, `${f} window ${r.window.id}: ${metric} ${fmt(v)} (threshold ${fmt(th)})`);
    });
  });
  el("text", {x: 4, y: h - 8}, s, "colour: metric / threshold (green 0, yellow 1/2, red >= 1: alert); grey: no data");
}
function threshold(t, feature, kind, metric) {
  const own = (t.features || {})[feature] || {};
  if (metric in own) return own[metric];
  if ("*" in own && metric === PRIMARY[kind]) return own["*"];
  return ((t.defaults || {})[kind] || {})[metric] ?? null;
}
function render() {
  const recs = DATA.records;
  const last = recs[recs.length - 1];
  document.getElementById("updated").textContent = `${recs.length} windows, ${DATA.alerts.length} alerts` +
    (last ? `, last window ${last.window.id} closed ${new Date(last.window.end_ts).toISOString()}` : "");
  const kp = document.getElementById("kpis");
  kp.textContent = "";
  const tot = recs.reduce((a, r) => a + r.events.in, 0), preds = recs.reduce((a, r) => a + r.events.predictions, 0);
  const dead = recs.reduce((a, r) => a + r.events.dead_total, 0);
  const labelled = recs.filter(r => r.labels);
  for (const [k, v] of [["events in", tot], ["predictions", preds], ["dead letters", dead],
                        ["model version", last ? last.model_version : null], ["alerts", DATA.alerts.length],
                        ["live ROC-AUC (last labelled window)", labelled.length ? labelled[labelled.length - 1].labels.roc_auc : null]]) {
    const d = document.createElement("span"); d.className = "kpi"; d.innerHTML = "<b></b>";
    d.firstChild.textContent = fmt(v); d.appendChild(document.createTextNode(k)); kp.appendChild(d);
  }
  lineChart("throughput", [{name: "events/s", color: "#4c78a8", points: recs.map(r => [r.window.id, r.throughput_eps])}], "events/s");
  lineChart("latency", [{name: "p50 ms", color: "#54a24b", points: recs.map(r => [r.window.id, r.latency_ms.p50])},
                        {name: "p99 ms", color: "#e45756", points: recs.map(r => [r.window.id, r.latency_ms.p99])}], "latency ms");
  lineChart("quality", [{name: "precision", color: "#4c78a8", points: labelled.map(r => [r.window.id, r.labels.precision])},
                        {name: "recall", color: "#f58518", points: labelled.map(r => [r.window.id, r.labels.recall])},
                        {name: "ROC-AUC", color: "#54a24b", points: labelled.map(r => [r.window.id, r.labels.roc_auc])}],
            "delayed labels");
  scoreChart("scores", (DATA.training.scores || {counts: []}).counts, last ? last.scores.counts : []);
  heatMap("heat", recs, DATA.thresholds);
  const tb = document.getElementById("alerts");
  tb.textContent = "";
  for (const a of DATA.alerts.slice(-50).reverse()) {
    const tr = document.createElement("tr");
    for (const v of [a.window.id, a.feature, a.metric, fmt(a.value), fmt(a.threshold), a.model_version])
      { const td = document.createElement("td"); td.textContent = v === null ? "n/a" : v; tr.appendChild(td); }
    tb.appendChild(tr);
  }
  const vt = document.getElementById("versions");
  vt.textContent = recs.slice(-12).map(r => `w${r.window.id}: v${r.model_version}`).join("  ");
}
function summaryTable() {
  const host = document.getElementById("summary");
  if (!DATA.summary) { host.closest(".card").style.display = "none"; return; }
  const rows = [];
  const alerted = new Set((DATA.summary_alerts || []).map(a => `${a.feature}:${a.metric}`));
  for (const [f, fig] of Object.entries(DATA.summary.features).concat([["__score__", Object.assign({kind: "score"}, DATA.summary.scores)]])) {
    const metric = fig.kind === "categorical" ? "linf" : "js";
    const th = threshold(DATA.thresholds, f, fig.kind, metric);
    rows.push([f, fig.kind, metric, fmt(fig[metric]), fmt(th), fmt(fig.psi), fmt(fig.missing_rate),
               fmt(fig.kind === "categorical" ? fig.unseen_rate : fig.out_of_range_rate),
               alerted.has(`${f}:${metric}`) ? "ALERT" : ""]);
  }
  host.textContent = "";
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const v of r) { const td = document.createElement("td"); td.textContent = v; if (v === "ALERT") td.className = "alert"; tr.appendChild(td); }
    host.appendChild(tr);
  }
}
async function poll() {
  try {
    const r = await fetch(`${POLL}?since=${DATA.seen || 0}`);
    if (r.ok) {
      const d = await r.json();
      DATA.seen = d.seen;
      DATA.records = DATA.records.concat(d.records).slice(-500);
      DATA.alerts = DATA.alerts.concat(d.alerts).slice(-500);
      if (d.training) DATA.training = d.training;
      if (d.thresholds) DATA.thresholds = d.thresholds;
      render();
    }
  } catch (e) {
    document.getElementById("updated").textContent = "waiting for the monitor server";
  }
  setTimeout(poll, 2000);
}
render();
summaryTable();
if (POLL) poll();
"""


def dashboard_html(payload: dict, poll_url: Optional[str] = None) -> str:
    """The dashboard page: `payload` inline; with `poll_url`, new records are fetched from it every 2 s."""
    title = payload.get("title") or "beam_ml monitor"
    data = json.dumps(payload, allow_nan=False, default=str).replace("</", "<\\/")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"
            f"<p class=\"note\" id=\"updated\"></p><div class=\"card\" id=\"kpis\"></div><div class=\"grid\">"
            "<div class=\"card\"><h2>Throughput per window</h2><div id=\"throughput\"></div></div>"
            "<div class=\"card\"><h2>Latency per window (event to prediction)</h2><div id=\"latency\"></div></div>"
            "<div class=\"card\"><h2>Score distribution: last window vs training</h2><div id=\"scores\"></div></div>"
            "<div class=\"card\"><h2>Live quality per window of labelled events (--label_topic)</h2>"
            "<div id=\"quality\"></div></div>"
            "<div class=\"card\"><h2>Model version per window</h2><p id=\"versions\"></p>"
            "<h2>Alerts</h2><table><thead><tr><th>window</th><th>feature</th><th>metric</th><th>value</th>"
            "<th>threshold</th><th>model</th></tr></thead><tbody id=\"alerts\"></tbody></table></div>"
            "<div class=\"card wide\"><h2>The whole input against training</h2><table><thead><tr><th>feature</th>"
            "<th>kind</th><th>metric</th><th>value</th><th>threshold</th><th>PSI</th><th>missing rate</th>"
            "<th>out of range / unseen</th><th></th></tr></thead><tbody id=\"summary\"></tbody></table></div>"
            "<div class=\"card wide\"><h2>Drift per feature and window (JS divergence numeric, L-infinity categorical)"
            "</h2><div id=\"heat\" style=\"overflow-x:auto\"></div></div></div>"
            f"<script>const DATA = {data};\nconst POLL = {json.dumps(poll_url)};\n"
            f"const PRIMARY = {json.dumps(PRIMARY)};\n{_SCRIPT}</script></body></html>")


def drift_report_payload(model_dir: str, input_path: str, window, thresholds, chunk_rows: int = 5000,
                         title: Optional[str] = None) -> dict:
    """The static drift report's data: `input_path` (CSV, local or gs://) scored by the model, in windows.

    Rows that fail validation are counted as dead letters ('validate'), never raised; a label column,
    when the file has it, gives precision, recall and ROC-AUC per window. Besides the windows, the
    whole input is one more record, `summary` (a window of kind 'all').

    Raises:
      UserError: a model without training statistics, or a missing input.
    """
    version_dir = resolve_version_dir(model_dir)
    stats = read_training_statistics(version_dir)
    if stats is None:
        raise UserError(f"--model_dir: {version_dir} has no training statistics (assets.extra/monitoring.json)")
    if not fs.exists(input_path):
        raise UserError(f"--input: no such file {input_path}")
    model = ServingModel.load(version_dir)
    spec = model.spec
    positive = spec.label_classes[-1] if spec.task != "multiclass" else None
    monitors = [WindowMonitor(stats, window, thresholds, source=input_path, labels=LabelJoin(positive)),
                WindowMonitor(stats, WindowSpec("all", 0), thresholds, source=input_path, labels=LabelJoin(positive))]
    out: list[dict] = []
    line = 1

    version = model.version

    def score(rows: list, labels: list, ids: list) -> None:
        predictions = [dict(p, model_version=version) for p in model.predict_records(rows)] if rows else []
        for m in monitors:
            if labels:
                m.labels(zip(ids, labels))
            recs = m.observe(rows, predictions, (), ids)
            if m is monitors[0]:
                out.extend(recs)

    with fs.open_read(input_path) as raw:
        encoding = "utf-8-sig" if spec.dialect.encoding == "utf-8" else spec.dialect.encoding
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding=encoding, newline=""),
                                delimiter=spec.dialect.delimiter)
        has_label = spec.label in (reader.fieldnames or [])
        rows, labels, ids = [], [], []
        for record in reader:
            line += 1
            reason = validate_record(record, spec)
            if reason is not None:
                for m in monitors:
                    m.dead("validate", 1)
                continue
            rows.append(record)
            ids.append(str(line))
            if has_label:
                labels.append(record.get(spec.label))
            if len(rows) >= chunk_rows:
                score(rows, labels, ids)
                rows, labels, ids = [], [], []
        score(rows, labels, ids)
    out.extend(monitors[0].flush())
    summary = monitors[1].close()
    return {"title": title or f"beam_ml drift report: {input_path} vs the training data of {version_dir}",
            "training": stats.to_dict(), "records": [r for r in out if r["type"] == "monitoring"],
            "alerts": [r for r in out if r["type"] == "alert"], "thresholds": thresholds.to_dict(),
            "summary": summary[0], "summary_alerts": summary[1:], "seen": len(out)}
