"""The versions a model server holds: the newest under the model root, hot-reloaded, and pinned ones.

    registry = ModelRegistry("out/fraud/model", load=lambda d: LoadedModel.open(d, options))
    await registry.start()              # loads the newest version (off the event loop)
    loaded = registry.acquire()         # the newest; registry.release(loaded) when its batch is done
    loaded.score(instances)             # one result per instance: a prediction or {'error': ...}

Hot reload: `watch()` lists the versions every `reload_interval` seconds and
loads a newer one in a loader thread while the current one keeps serving; the
swap is one assignment on the event loop, so a batch uses one version from
start to end. The replaced version is closed once its last batch releases it.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from typing import Any, Callable, Optional, Sequence

import apache_beam as beam

from beam_ml import fs
from beam_ml.clean.layout import CleanEventBatchesFn
from beam_ml.features.live import add_live_features
from beam_ml.inference.batches import RowBatch
from beam_ml.io.kafka.records import KafkaRecord
from beam_ml.model_store import list_versions, model_root_of, resolve_version_dir
from beam_ml.records import RowRef
from beam_ml.server.requests import json_bytes
from beam_ml.serving import ServingModel, score_records

__all__ = ["LoadedModel", "ModelRegistry", "NotFound", "spec_description"]

_LOGGER = logging.getLogger(__name__)
_REQUEST_TOPIC = "request"  # what a cleaning dead letter's source names: the request (position: instance index)
_PINNED_KEPT = 2  # pinned versions kept loaded besides the newest


class NotFound(Exception):
    """No such model version (404)."""


def _score_one(model: ServingModel, row: dict) -> dict:
    """score_records for one row; a failure becomes its error result."""
    try:
        return score_records(model, [row])[0]
    except Exception as e:  # pylint: disable=broad-except
        return {"record": 0, "error": f"scoring failed: {type(e).__name__}: {e}"}


def _fill_missing(instances: Sequence[dict], features: Sequence[str]) -> list[dict]:
    """A missing feature is a missing value: the model imputes its default (numeric: the train mean; categorical: OOV)."""
    out = []
    for inst in instances:
        if all(f in inst for f in features):
            out.append(inst)
        else:
            row = dict.fromkeys(features)
            row.update(inst)
            out.append(row)
    return out


class LoadedModel:
    """One loaded version: the ServingModel, its cleaning statement (if any), and the batches using it.

    Attributes:
      model: the `beam_ml.serving.ServingModel`.
      version: its integer version.
      in_flight: batches being scored with it (maintained by the registry).
    """

    def __init__(self, model: ServingModel, cleaning: Any = None, features: Any = None):
        self.model = model
        self.version = model.version
        self.cleaning = cleaning
        # The window state (a beam_ml.features.LiveFeatures, shared by the versions of one statement), or None.
        self.features = features
        self.in_flight = 0
        self.retired = False
        self._features = model.spec.feature_columns
        self._clean_fn = None
        if cleaning is not None:
            # The streaming path's own step: parse, type as events, the statement with its lookups, the spec's checks.
            self._clean_fn = CleanEventBatchesFn(model.spec, cleaning)
            self._clean_fn.setup()

    @classmethod
    def open(cls, version_dir: str, cleaning_for: Optional[Callable[[Any], Any]] = None,
             features_for: Optional[Callable[[Any], Any]] = None) -> "LoadedModel":
        """Loads a version directory; `cleaning_for(spec)` gives its Cleaning, `features_for(spec)` its
        window state (a LiveFeatures), each or None."""
        model = ServingModel(version_dir)
        return cls(model, cleaning_for(model.spec) if cleaning_for else None,
                   features_for(model.spec) if features_for else None)

    def close(self) -> None:
        if self._clean_fn is not None:
            self._clean_fn.teardown()
            self._clean_fn = None

    def score(self, instances: Sequence[dict]) -> list[dict]:
        """One result per instance, in order: a prediction (score, class, ..., model_version), `{'filtered': True,
        'model_version': v}` for an instance the cleaning statement filters out, or `{'error': reason}`.

        Called from the scoring thread only (the cleaning step holds one DuckDB connection; the window
        state is updated in instance order, which is request arrival order).
        """
        if self.features is not None:
            return self._score_featured(instances)
        if self._clean_fn is None:
            results = score_records(self.model, _fill_missing(instances, self._features))
            return [{"error": r["error"]} if "error" in r and "record" in r else r for r in results]
        return self._score_cleaned(instances)

    def _score_cleaned(self, instances: Sequence[dict]) -> list[dict]:
        records = [KafkaRecord(None, json_bytes(inst), _REQUEST_TOPIC, 0, i, 0) for i, inst in enumerate(instances)]
        errors: dict[int, str] = {}
        positions, rows = [], []
        for out in self._clean_fn.process(records):
            if isinstance(out, beam.pvalue.TaggedOutput):
                errors.setdefault(int(out.value.position), f"{out.value.stage}: {out.value.reason}")
            elif isinstance(out, RowBatch):
                positions.extend(ref.position for ref in out.refs)
                rows.extend(out.rows)
        scored = dict(zip(positions, score_records(self.model, rows)))
        key = self.model.spec.key_column
        results = []
        for i, inst in enumerate(instances):
            if i in errors:
                results.append({"error": errors[i]})
            elif i in scored:
                p = scored[i]
                if "error" in p:
                    p = {"error": p["error"]}
                elif key and key in inst:
                    p[key] = inst[key]
                results.append(p)
            else:
                results.append({"filtered": True, "model_version": self.version})
        return results

    def _score_featured(self, instances: Sequence[dict]) -> list[dict]:
        """The stored windowed-feature statement: each instance gets its key's point-in-time aggregates (then
        joins the key's window state), as stream_predict computes them; no key or event time -> an error."""
        batch = RowBatch([RowRef(_REQUEST_TOPIC, i, None) for i in range(len(instances))],
                         [dict(inst) for inst in instances])
        featured, dead = add_live_features(self.features, batch, self.model.spec)
        errors = {d.position: d.reason for d in dead}
        rows = _fill_missing(featured.rows, self._features)
        try:
            results = score_records(self.model, rows)
        except Exception:  # pylint: disable=broad-except
            # The events have joined their windows: this method must not raise, or the batcher's retry of
            # each request alone would add them a second time. Each row alone instead; a failing one is an error.
            _LOGGER.exception("scoring %d featured instances with version %d failed", len(rows), self.version)
            results = [_score_one(self.model, row) for row in rows]
        scored = dict(zip((ref.position for ref in featured.refs), results))
        return [{"error": errors[i]} if i in errors else
                {"error": scored[i]["error"]} if "error" in scored[i] else scored[i] for i in range(len(instances))]

    def signature_defs(self) -> dict[str, Any]:
        return self.model.signature_defs()


def spec_description(loaded: LoadedModel) -> dict[str, Any]:
    """The dataset spec as the metadata route shows it: every feature with its type and default."""
    model = loaded.model
    spec = model.spec
    features = []
    for c in spec.columns:
        if c.role not in ("numeric", "categorical"):
            continue
        if c.default is not None:
            missing = "the spec's default"
        else:
            missing = "the training mean" if c.role == "numeric" else "the out-of-vocabulary bucket"
        features.append({"name": c.name, "type": c.role, "default": c.default, "missing_value": missing})
    doc: dict[str, Any] = {"task": model.task, "label": spec.label, "classes": model.classes,
                           "features": features, "key_column": spec.key_column}
    if model.task in ("binary", "anomaly"):
        doc["threshold"] = model.threshold
    if loaded.cleaning is not None:
        statement = loaded.cleaning.statement
        doc["cleaning"] = {"sql": statement.sql,
                           "instance_fields": [{"name": f.name, "type": str(f.type)}
                                               for f in statement.events_schema if not f.name.startswith("__")]}
    if loaded.features is not None:
        plan = loaded.features.plan
        doc["window_features"] = {"sql": plan.sql, "key": plan.key, "event_time_column": plan.event_time_column,
                                  "computed": plan.names, "keys_held": len(loaded.features)}
    return doc


class ModelRegistry:
    """The newest version under a model root (hot-reloaded) plus versions pinned by URL, loaded on demand.

    Everything but loading runs on the event loop; loads run in one loader
    thread, so a reload never blocks scoring.
    """

    def __init__(self, model_dir: str, load: Callable[[str], LoadedModel], reload_interval: float = 10.0):
        """Args:
          model_dir: a model root, a train output dir, or one version dir (then nothing is reloaded).
          load: version dir -> LoadedModel (runs in the loader thread).
          reload_interval: seconds between checks for a newer version.
        """
        self.model_dir = model_dir
        self.root = model_root_of(model_dir)
        self.latest: Optional[LoadedModel] = None
        self.last_error: Optional[str] = None
        self._load = load
        self._interval = reload_interval
        self._pinned: collections.OrderedDict[int, LoadedModel] = collections.OrderedDict()
        self._loading: dict[int, asyncio.Future] = {}
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._listeners: list[Callable[[LoadedModel], None]] = []

    def on_swap(self, listener: Callable[[LoadedModel], None]) -> None:
        """Calls `listener(loaded)` on the event loop whenever a new newest version starts serving."""
        self._listeners.append(listener)

    async def start(self) -> LoadedModel:
        """Loads the version `model_dir` serves now."""
        path = await asyncio.get_running_loop().run_in_executor(self._loader, resolve_version_dir, self.model_dir)
        loaded = await self._load_async(path)
        self._swap(loaded)
        return loaded

    async def _load_async(self, path: str) -> LoadedModel:
        return await asyncio.get_running_loop().run_in_executor(self._loader, self._load, path)

    def _swap(self, loaded: LoadedModel) -> None:
        old, self.latest = self.latest, loaded
        _LOGGER.info("serving model version %d (%s)", loaded.version, loaded.model.path)
        if old is not None:
            self._retire(old)
        for listener in self._listeners:
            listener(loaded)

    def _retire(self, loaded: LoadedModel) -> None:
        loaded.retired = True
        if loaded.in_flight == 0:
            self._loader.submit(loaded.close)

    async def watch(self) -> None:
        """Polls the model root for newer versions until cancelled (nothing to do for a pinned version dir)."""
        if self.root is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._interval)
            try:
                versions = await loop.run_in_executor(self._loader, list_versions, self.root)
                current = self.latest.version if self.latest is not None else 0
                if versions and versions[-1] > current:
                    path = fs.join(self.root, str(versions[-1]))
                    self._swap(await self._load_async(path))
                self.last_error = None
            except Exception as e:  # pylint: disable=broad-except  # a broken export must not stop serving
                self.last_error = f"{type(e).__name__}: {e}"
                _LOGGER.warning("hot reload: keeping version %s: %s",
                                self.latest.version if self.latest else None, self.last_error)

    def loaded_versions(self) -> list[LoadedModel]:
        """The versions serving now: the newest first, then pinned ones."""
        out = [self.latest] if self.latest is not None else []
        return out + [m for v, m in self._pinned.items() if self.latest is None or v != self.latest.version]

    async def get(self, version: Optional[int] = None) -> LoadedModel:
        """The LoadedModel for `version` (None: the newest), loading a pinned one on first use; acquired.

        Raises:
          NotFound: no such complete version under the model root.
        """
        latest = self.latest
        if latest is None:
            raise NotFound("no model loaded yet")
        if version is None or version == latest.version:
            return self._acquire(latest)
        loaded = self._pinned.get(version)
        if loaded is None:
            loaded = await self._load_pinned(version)
        self._pinned.move_to_end(version)
        return self._acquire(loaded)

    async def _load_pinned(self, version: int) -> LoadedModel:
        pending = self._loading.get(version)
        if pending is None:
            if self.root is None:
                raise NotFound(f"version {version}: this server serves one pinned version "
                               f"({self.latest.version})")
            loop = asyncio.get_running_loop()
            versions = await loop.run_in_executor(self._loader, list_versions, self.root)
            if version not in versions:
                raise NotFound(f"version {version} not found under the model root")
            pending = self._loading.get(version)
        if pending is None:
            pending = asyncio.ensure_future(self._load_async(fs.join(self.root, str(version))))
            self._loading[version] = pending
            try:
                loaded = await pending
            finally:
                self._loading.pop(version, None)
            self._pinned[version] = loaded
            while len(self._pinned) > _PINNED_KEPT:
                _, evicted = self._pinned.popitem(last=False)
                self._retire(evicted)
            return loaded
        return await asyncio.shield(pending)

    def _acquire(self, loaded: LoadedModel) -> LoadedModel:
        loaded.in_flight += 1
        return loaded

    def release(self, loaded: LoadedModel) -> None:
        """A batch is done with `loaded`: a retired version is closed after its last batch."""
        loaded.in_flight -= 1
        if loaded.retired and loaded.in_flight == 0:
            self._loader.submit(loaded.close)

    def close(self) -> None:
        for loaded in self.loaded_versions():
            loaded.close()
        self._loader.shutdown(wait=False)
