"""Serving benchmark: our service vs its in-process ceiling, LitServe and a naive FastAPI server.

``python -m benchmarks.serving run --out benchmarks/results/serving`` builds a checkpoint and
payloads, starts each server on loopback, drives it with wrk at several concurrencies and writes
``results.json``, ``results.md`` and ``results.png``. See ``benchmarks/README.md``.
"""
