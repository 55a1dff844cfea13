"""Measurements of the project: accuracy (training) and speed (serving). Not part of the wheel."""
