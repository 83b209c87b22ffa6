"""Data out: datasets, a round's samples and a run's evaluations as Parquet files and Hugging
Face ``datasets`` folders, each with a dataset card generated from the lineage.

Runs in: anywhere. ``schema`` (Arrow schemas, pure), ``card`` (the card, pure), ``parquet``
(row-group writer), ``hf`` (``datasets`` folders and the Hub, optional packages) and
``exporter`` (reads the database and the store, writes the folder or streams the file); the
SQL is :mod:`dataflywheel.db.exports`. ``docs/export.md`` documents the columns and the card.
"""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says what to do."""
