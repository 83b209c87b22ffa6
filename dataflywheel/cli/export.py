"""``flywheel export …``: a dataset, a round's samples or a run's evaluations as a Parquet
file (or a Hugging Face ``datasets`` folder) with a dataset card, optionally pushed to the Hub.

Runs in: the user's shell (the CLI process). The work is :mod:`dataflywheel.export.exporter`;
this module turns options into a target, picks the default folder
(``<data dir>/exports/...``) and reports what it wrote.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dataflywheel.cli.common import CommandError, friendly_errors, out, settings

if TYPE_CHECKING:
    from dataflywheel.export.exporter import Target

app = typer.Typer(
    help="Datasets, samples and evaluations out as Parquet or Hugging Face datasets, each with "
    "a dataset card from the lineage (docs/export.md).",
    no_args_is_help=True,
)


class Format(StrEnum):
    parquet = "parquet"
    hf = "hf"


class Purpose(StrEnum):
    train = "train"
    eval = "eval"
    baseline = "baseline"


OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Folder to write, absent or empty (default: <data dir>/exports/…)."),
]
FormatOption = Annotated[
    Format,
    typer.Option(
        "--format",
        help="parquet: data/*.parquet and README.md; hf: also a datasets.save_to_disk folder "
        "(needs the `datasets` package).",
    ),
]
HubOption = Annotated[
    str | None,
    typer.Option(
        "--push-to-hub",
        metavar="REPO",
        help="Upload the card and Parquet files to this Hub dataset repo (user/name); the "
        "token comes from HF_TOKEN or `huggingface-cli login`.",
    ),
]
PrivateOption = Annotated[
    bool, typer.Option("--private", help="With --push-to-hub: create the repo private.")
]
RowGroupOption = Annotated[
    int, typer.Option("--row-group-rows", min=1, help="Rows per Parquet row group.")
]


def _export(
    target: Target,
    default_name: str,
    out_dir: Path | None,
    fmt: Format,
    push_to_hub: str | None,
    private: bool,
    row_group_rows: int,
) -> None:
    from dataflywheel.db.session import engine_from_settings
    from dataflywheel.export import ExportError
    from dataflywheel.export.exporter import DatasetTarget, export_folder
    from dataflywheel.store import store_from_settings

    config = settings()
    folder = out_dir or config.resolved_data_dir / "exports" / default_name
    store = store_from_settings(config) if isinstance(target, DatasetTarget) else None
    engine = engine_from_settings(config)
    try:
        result = export_folder(
            engine, target, folder, store=store, fmt=fmt.value, row_group_rows=row_group_rows
        )
        files = ", ".join(str(p.relative_to(result.folder)) for p in result.data_files)
        out.print(
            f"wrote {result.rows} rows to {result.folder} ({files}, README.md"
            + (", datasets folder" if fmt is Format.hf else "")
            + ")",
            highlight=False,
            soft_wrap=True,
        )
        if push_to_hub:
            from dataflywheel.export.hf import push_to_hub as push

            url = push(result.folder, push_to_hub, private=private)
            out.print(f"pushed to {url}", highlight=False, soft_wrap=True)
    except ExportError as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()


@app.command("dataset")
@friendly_errors
def dataset(
    dataset_id: Annotated[
        int, typer.Argument(help="The dataset (ids: `flywheel lineage CHECKPOINT_ID`).")
    ],
    out_dir: OutOption = None,
    fmt: FormatOption = Format.parquet,
    push_to_hub: HubOption = None,
    private: PrivateOption = False,
    row_group_rows: RowGroupOption = 50_000,
) -> None:
    """A dataset's rows as trained, each with its prompt, sample, scores and checkpoint."""
    from dataflywheel.export.exporter import DatasetTarget

    _export(
        DatasetTarget(dataset_id),
        f"dataset-{dataset_id}",
        out_dir,
        fmt,
        push_to_hub,
        private,
        row_group_rows,
    )


@app.command("samples")
@friendly_errors
def samples(
    run_id: Annotated[int, typer.Argument(help="The run (see `flywheel runs`).")],
    round_index: Annotated[int, typer.Option("--round", min=0, help="The round's index.")],
    purpose: Annotated[
        list[Purpose] | None,
        typer.Option("--purpose", help="Only samples of this purpose; repeatable (default: all)."),
    ] = None,
    out_dir: OutOption = None,
    fmt: FormatOption = Format.parquet,
    push_to_hub: HubOption = None,
    private: PrivateOption = False,
    row_group_rows: RowGroupOption = 50_000,
) -> None:
    """A round's samples, one row per sample, with every verifier's verdict."""
    from dataflywheel.export.exporter import PURPOSES, SamplesTarget

    purposes = tuple(p.value for p in purpose) if purpose else PURPOSES
    suffix = "" if purposes == PURPOSES else "-" + "-".join(purposes)
    _export(
        SamplesTarget(run_id, round_index, purposes),
        f"run-{run_id}-round-{round_index}-samples{suffix}",
        out_dir,
        fmt,
        push_to_hub,
        private,
        row_group_rows,
    )


@app.command("evaluations")
@friendly_errors
def evaluations(
    run_id: Annotated[int, typer.Argument(help="The run (see `flywheel runs`).")],
    out_dir: OutOption = None,
    fmt: FormatOption = Format.parquet,
    push_to_hub: HubOption = None,
    private: PrivateOption = False,
    row_group_rows: RowGroupOption = 50_000,
) -> None:
    """A run's evaluations: one row per (evaluation, prompt) result."""
    from dataflywheel.export.exporter import EvaluationsTarget

    _export(
        EvaluationsTarget(run_id),
        f"run-{run_id}-evaluations",
        out_dir,
        fmt,
        push_to_hub,
        private,
        row_group_rows,
    )
