"""Hugging Face side of an export: a ``datasets`` folder built from the Parquet file, and the
upload of an export folder to the Hub.

Runs in: the process that exports (the CLI). ``datasets`` and ``huggingface_hub`` are
optional (the ``cpu`` and ``gpu`` extras bring them): they are imported only here, only when
asked for, and a missing one is an :class:`ExportError` that says how to install it. The
folder is built from the Parquet file a batch at a time: an Arrow stream file (beside the
export folder while it is built, then removed) that ``Dataset.from_file`` memory-maps, then
``save_to_disk``, so memory stays bounded as for the Parquet file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataflywheel.export import ExportError
from dataflywheel.export.card import SPLIT

HUB_FILES = ("README.md", "data/*")


def require_datasets() -> Any:
    """The ``datasets`` module, or an :class:`ExportError` saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ExportError(
            "--format hf needs the Hugging Face `datasets` package: pip install 'datasets>=3' "
            "(the cpu and gpu extras include it: pip install 'dataflywheel[cpu]'); "
            "--format parquet needs nothing more"
        ) from None
    return datasets


def save_dataset_folder(parquet_files: list[Path], folder: Path, batch_rows: int = 2_000) -> int:
    """``save_to_disk`` the rows of ``parquet_files`` into ``folder`` (which may already hold
    the card and the Parquet files); returns the number of rows."""
    datasets = require_datasets()
    # The Parquet rows go into an Arrow stream file a batch at a time, which
    # ``Dataset.from_file`` memory-maps as it is; ``Dataset.from_parquet`` held a share of the
    # rows that grew with their number in anonymous memory (docs/benchmarks.md). The file lies
    # beside the folder: save_to_disk refuses a dataset whose own file is inside its target.
    staging = folder.with_name(f".{folder.name}.staging.arrow")
    bars_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        schema = pq.read_schema(parquet_files[0])
        with pa.OSFile(str(staging), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for path in parquet_files:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                    writer.write_batch(batch)
        dataset = datasets.Dataset.from_file(str(staging), split=SPLIT)
        dataset.save_to_disk(str(folder))
        rows = dataset.num_rows
        del dataset
    finally:
        if bars_on:
            datasets.enable_progress_bars()
        staging.unlink(missing_ok=True)
    return rows


def push_to_hub(folder: Path, repo_id: str, *, private: bool, token: str | None = None) -> str:
    """Upload the card and the Parquet files of ``folder`` to the dataset repo ``repo_id``
    (created if missing); returns its URL. The token comes from ``token``, ``HF_TOKEN`` or
    ``huggingface-cli login``."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ExportError(
            "--push-to-hub needs `huggingface_hub`: pip install huggingface_hub"
        ) from None
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        allow_patterns=list(HUB_FILES),
        commit_message="dataflywheel export",
    )
    return str(repo)
