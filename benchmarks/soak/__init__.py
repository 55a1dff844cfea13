"""Soak and overload benchmark of the service (issue 8): capacity, starvation, open-loop overload.

``python -m benchmarks.soak run --out DIR``; what it measures: ``python -m benchmarks.soak -h``.
"""
