"""``flywheel store …``: the content-addressed object store.

Runs in: the user's shell (the CLI process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataflywheel.cli.common import err, friendly_errors, out, settings

app = typer.Typer(help="The content-addressed object store.", no_args_is_help=True)


@app.command("put")
@friendly_errors
def store_put(
    path: Annotated[Path, typer.Argument(exists=True, readable=True, help="A file or folder.")],
) -> None:
    """Store a file (or a folder, as a manifest of files) and print its key."""
    from dataflywheel.store import store_from_settings

    store = store_from_settings(settings())
    ref = store.put_tree(path) if path.is_dir() else store.put_file(path)
    print(ref.key)


@app.command("get")
@friendly_errors
def store_get(
    key: Annotated[str, typer.Argument(help="Object key (sha256/..) or bare digest.")],
    dest: Annotated[Path, typer.Argument(help="Where to write the file or folder.")],
    tree: Annotated[bool, typer.Option("--tree", help="KEY is a folder manifest.")] = False,
) -> None:
    """Fetch an object (verifying its digest) into DEST."""
    from dataflywheel.store import store_from_settings

    store = store_from_settings(settings())
    written = store.get_tree(key, dest) if tree else store.get_file(key, dest)
    out.print(f"wrote {written}")


@app.command("ls")
@friendly_errors
def store_ls(
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this.")] = "",
) -> None:
    """List stored objects with their sizes."""
    from dataflywheel.store import store_from_settings

    store = store_from_settings(settings())
    count = 0
    for info in store.list(prefix):
        print(f"{info.size:>12}  {info.key}")
        count += 1
    err.print(f"{count} object(s) in {store.uri}")
