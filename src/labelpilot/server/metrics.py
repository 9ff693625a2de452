"""Prometheus metrics of this process (a registry of its own, so tests can run several apps).

Label values are bounded: routes are the templates of the app's own routes (``app.route_label``),
methods come from the HTTP verbs, statuses are numbers, and model names only appear once they name a
served model, with at most ``MAX_MODEL_SERIES`` (model, version) pairs; later ones are counted as ``other``.

Predict-service (`/v1`) requests are also counted in ``traffic``, a bounded ring of per-10-s buckets
(``server/traffic.py``) from which the dashboard draws requests/s, latency percentiles and errors over time.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from labelpilot.server.traffic import TrafficRing

MAX_MODEL_SERIES = 200
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 100)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "labelpilot_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "labelpilot_http_request_seconds", "HTTP request latency", ["route", "method"],
            buckets=_BUCKETS, registry=self.registry,
        )
        self.predicted = Counter("labelpilot_predicted_tasks_total", "Tasks predicted", registry=self.registry)
        self.predict_errors = Counter(
            "labelpilot_predict_task_errors_total", "Tasks that got an empty prediction because of an error",
            registry=self.registry,
        )
        self.model_requests = Counter(
            "labelpilot_model_requests_total", "Predict-service requests", ["model", "version", "status"],
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "labelpilot_model_request_seconds", "Predict-service latency", ["model", "version"],
            buckets=_BUCKETS, registry=self.registry,
        )

        self._model_series: set[tuple[str, str]] = set()
        self.traffic = TrafficRing()

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def observe_model(self, model: str, version: str, status: str, seconds: float) -> None:
        """One predict-service request; ``model`` and ``version`` must name a served model (or be
        ``unknown``); past MAX_MODEL_SERIES pairs they become ``other``."""
        key = (model, version)
        if key not in self._model_series:
            if len(self._model_series) >= MAX_MODEL_SERIES:
                key = ("other", "other")
            else:
                self._model_series.add(key)
        self.model_requests.labels(*key, status).inc()
        self.model_latency.labels(*key).observe(seconds)
        self.traffic.observe(seconds, error=status != "ok")

    def observe_predict(self, n_tasks: int, seconds: float, n_errors: int) -> None:
        self.predicted.inc(n_tasks)
        if n_errors:
            self.predict_errors.inc(n_errors)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = sample.name + ("{" + ",".join(f"{k}={v}" for k, v in sample.labels.items()) + "}"
                                         if sample.labels else "")
                    out[key] = sample.value
        return out
