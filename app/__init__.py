"""The prediction service: FastAPI app, micro-batcher and the stages a request goes through.

``create_app(settings)`` in :mod:`app.main` builds the app; ``python -m app`` serves it.
"""
