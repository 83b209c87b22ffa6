"""The ``flywheel`` command: the app and where each command group is registered.

Runs in: the user's shell (the CLI process). One module per command group beside this one
(``db``, ``store``, ``server``, ``runs``, ``plan``, ``ops``, ``report``, ``rescore``,
``export``, ``control``, ``doctor``, ``local_services``); what they share (consoles, error
handling, the schema check) is ``common``, and the life of a command that runs flows is
``flow_env``. Every command resolves its settings from the environment (``FLYWHEEL_*``), turns
our own error types into one readable message with a non-zero exit status, and never prints a
stack trace for a configuration mistake.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dataflywheel import __version__
from dataflywheel.cli import (
    control,
    db,
    doctor,
    export,
    local_services,
    ops,
    plan,
    report,
    rescore,
    runs,
    server,
    store,
)
from dataflywheel.cli.common import friendly_errors, out

app = typer.Typer(
    name="flywheel",
    help="Self-improvement rounds for language models, with every artifact kept.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        out.print(f"dataflywheel {__version__}")
        raise typer.Exit()


app.add_typer(db.app, name="db")
app.add_typer(store.app, name="store")
app.add_typer(server.app, name="server")
app.add_typer(export.app, name="export")
for _module, _names in (
    (runs, ("run", "resume")),
    (plan, ("plan",)),
    (report, ("runs", "report", "lineage")),
    (ops, ("check", "replay", "diff")),
    (rescore, ("rescore",)),
):
    for _name in _names:
        app.command(_name)(friendly_errors(getattr(_module, _name)))
app.command("down")(local_services.down)
app.command("doctor")(doctor.doctor)
control.register(app)
