"""Offline training, ``invasive-train``: fit, evaluate, predict, eda, demo.

``fit`` (``training.fit``, ``training.cv``) turns labelled photos into one checkpoint through
``model/``, the contract shared with the service; ``evaluate``, ``predict`` and validation score
through the service's own ``prepare_input`` + ``Classifier``. Nothing in ``app/`` imports this.
"""
