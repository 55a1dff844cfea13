"""Prometheus metrics of one app instance, and the ASGI middleware that records requests.

Each app gets its own registry (tests build many apps in one process; the global default
registry would refuse duplicate metric names). Requests are labelled by route *template*
(``/v1/predict``), never by raw path, so a scanner hitting random URLs cannot blow up cardinality.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """All the service's metrics, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "invasive_http_requests",
            "HTTP requests by route, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "invasive_http_request_duration_seconds",
            "HTTP request latency by route, from first byte in to last byte out",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "invasive_stage_duration_seconds",
            "Time per image in each stage: decode (incl. preprocess), queue, inference",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "invasive_inference_batch_size",
            "Images per forward pass",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "invasive_images",
            "Images handled, by outcome (predicted or an error code)",
            ["outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "invasive_queue_depth", "Images waiting for the inference thread", registry=r
        )
        self.model_load_seconds = Gauge(
            "invasive_model_load_seconds",
            "Seconds spent loading the checkpoint (excluding warm-up)",
            registry=r,
        )
        self.warmup_seconds = Gauge(
            "invasive_model_warmup_seconds", "Seconds spent on warm-up batches", registry=r
        )
        self.ready = Gauge("invasive_ready", "1 when the model is loaded and warmed up", registry=r)
        self.memory_in_use = Gauge(
            "invasive_memory_budget_in_use_bytes",
            "Bytes of the memory budget held by requests in flight (uploads + decodes)",
            registry=r,
        )
        self.memory_budget = Gauge(
            "invasive_memory_budget_bytes",
            "The memory budget (INVASIVE_MEMORY_BUDGET_MB); in use may exceed it by its reserve "
            "(INVASIVE_MEMORY_RESERVE_PERCENT), which only ordinary work uses",
            registry=r,
        )
        self.gave_way = Counter(
            "invasive_memory_budget_gave_way",
            "Requests refused (503 at_capacity) so that earlier requests waiting for the memory "
            "budget's room could finish: many mean the budget is small for the batches sent",
            registry=r,
        )
        self.memory_wait = Histogram(
            "invasive_memory_budget_wait_seconds",
            "How long each request waited for room in the memory budget, in all (its upload's "
            "chunks and its images' decodes); most wait none",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.worker_restarts = Counter(
            "invasive_inference_worker_restarts",
            "Inference threads that died and were restarted by the supervisor",
            registry=r,
        )
        self.loop_lag = Histogram(
            "invasive_event_loop_lag_seconds",
            "How late the event loop runs a callback that is due (sampled every 25 ms): tenths "
            "of a second with short queues mean one process cannot parse the uploads it gets",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.draining = Gauge(
            "invasive_draining", "1 from SIGTERM until the port closes (readiness 503)", registry=r
        )

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def track_memory(self, in_use: Callable[[], int], budget: int) -> None:
        self.memory_in_use.set_function(in_use)
        self.memory_budget.set(budget)


# Labels are a bounded set: the method as sent would let any client add a series per request
# (an unknown method still gets its 405 and is counted, as "other").
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no per-request task or body copy)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if method not in KNOWN_METHODS:  # any token is a valid method to h11
                method = "other"
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.request_latency.labels(template, method).observe(
                time.perf_counter() - started
            )
