"""Read-only database roles for analysts: which tables they may read, and the SQL that makes
and removes such roles.

Runs in: the CLI process (``flywheel db grant-reader`` / ``revoke-reader``) and the Alembic
environment (after a migration, the grants are applied again). Every function works inside
the caller's transaction and never commits.

The privileges live on one group role, :data:`READERS_GROUP` (NOLOGIN); each analyst is a
LOGIN role that is a member of it and of nothing else. The group's grants are an explicit
list, :data:`READABLE`, applied from scratch every time (revoke everything, grant SELECT on
the list), never ``ALTER DEFAULT PRIVILEGES``: a table a later migration adds is private
until someone classifies it here, and a test fails until every table of ``models.py`` is
classified as :data:`READABLE` or :data:`PRIVATE`. Every reader role also has
``default_transaction_read_only = on``, a second guard that an analyst's tool cannot write
by accident; the privileges are the real one, since a session may turn that setting off.

Roles are cluster-wide in PostgreSQL while grants are per database: a reader can read each
database on the server whose flywheel schema granted the group (the grants are applied to
the database the command runs against, and again by each migration of a database where the
group exists).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from dataflywheel.db.staged_copy import DbHandle, driver_connection

READERS_GROUP = "flywheel_readers"
"""The NOLOGIN group role that holds the readers' privileges."""

READABLE: tuple[str, ...] = (
    "runs",
    "rounds",
    "prompts",
    "checkpoints",
    "checkpoint_datasets",
    "datasets",
    "dataset_members",
    "samples",
    "scores",
    "evaluations",
    "evaluation_results",
)
"""The lineage (docs/schema.md): runs and rounds and everything the recipes of
docs/lineage.md walk. Readers get SELECT on these and nothing else."""

PRIVATE: dict[str, str] = {
    "api_keys": "the HTTP API's bearer keys: token hashes, who holds each key and when it was "
    "last used; nothing in the lineage refers to them",
    "stage_shards": "the stage/shard ledger's internals: how a round's work was cut and "
    "retried, which Ray node ran each shard, error text that can quote paths and hosts; rows "
    "change while a round runs and follow the scheduler, and the lineage is complete without "
    "them",
    "alembic_version": "Alembic's record of the schema revision (migration bookkeeping)",
}
"""Relations readers must not see, each with the reason."""

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RELATION_KINDS = ("r", "p", "v", "m", "f")  # tables, partitioned tables, views, matviews, foreign


class ReaderError(RuntimeError):
    """A reader role cannot be made or removed as asked; the message says why and what to do."""


def check_name(name: str) -> None:
    """Refuse a role name that is not a plain lowercase identifier or is reserved."""
    if not _NAME.fullmatch(name):
        raise ReaderError(
            f"role name {name!r}: use 1-63 lowercase letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    if name.startswith("pg_") or name == READERS_GROUP:
        raise ReaderError(f"role name {name!r} is reserved; choose another")


def _pg(db: DbHandle) -> psycopg.Connection[Any]:
    return driver_connection(db)


def _schema(pg: psycopg.Connection[Any]) -> str:
    row = pg.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise ReaderError("the connection has no current schema (check its search_path)")
    return str(row[0])


def group_exists(db: DbHandle) -> bool:
    row = _pg(db).execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READERS_GROUP,))
    return row.fetchone() is not None


def ensure_group(db: DbHandle) -> None:
    """Create the NOLOGIN group role if it does not exist (safe against a concurrent create)."""
    _pg(db).execute(
        sql.SQL(
            "DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ).format(sql.Identifier(READERS_GROUP))
    )


def apply_grants(db: DbHandle) -> list[str]:
    """Make the group's privileges in this database exactly SELECT on the :data:`READABLE`
    relations that exist (and USAGE on their schema); return those relations.

    Everything else the group held here is revoked first, so a hand-made grant or a table
    dropped from the list does not linger. The group must exist."""
    pg = _pg(db)
    schema = sql.Identifier(_schema(pg))
    group = sql.Identifier(READERS_GROUP)
    for statement in (
        "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {group}",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {group}",
        "REVOKE CREATE ON SCHEMA {schema} FROM {group}",
    ):
        pg.execute(sql.SQL(statement).format(schema=schema, group=group))
    usage = pg.execute(
        "SELECT has_schema_privilege(%s, current_schema(), 'USAGE')", (READERS_GROUP,)
    ).fetchone()
    if not (usage and usage[0]):
        # PUBLIC holds USAGE on schema public by default, and granting it takes the schema's
        # owner (the database owner), which the migrating role need not be: only if revoked.
        pg.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, group))
    present = [
        row[0]
        for row in pg.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = ANY(%s) "
            "AND c.relkind::text = ANY(%s) ORDER BY c.relname",
            (list(READABLE), list(_RELATION_KINDS)),
        )
    ]
    for table in present:
        pg.execute(
            sql.SQL("GRANT SELECT ON TABLE {}.{} TO {}").format(
                schema, sql.Identifier(table), group
            )
        )
    return present


def reapply_grants(db: DbHandle) -> bool:
    """:func:`apply_grants` where the group exists (readers were ever made on this server);
    False, changing nothing, where it does not. Called after every migration."""
    if not group_exists(db):
        return False
    apply_grants(db)
    return True


def _role(pg: psycopg.Connection[Any], name: str) -> tuple[bool, list[str]] | None:
    """(has any administrative attribute, the roles it is a member of), or None if absent."""
    row = pg.execute(
        "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication "
        "OR r.rolbypassrls, "
        "ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "      WHERE m.member = r.oid ORDER BY g.rolname) "
        "FROM pg_roles r WHERE r.rolname = %s",
        (name,),
    ).fetchone()
    return None if row is None else (bool(row[0]), list(row[1]))


def _refuse_non_reader(
    pg: psycopg.Connection[Any], name: str, role: tuple[bool, list[str]]
) -> None:
    elevated, groups = role
    current = pg.execute("SELECT current_user").fetchone()
    if current and current[0] == name:
        raise ReaderError(f"role {name!r} is the one this command connects as; choose another")
    if elevated or READERS_GROUP not in groups:
        raise ReaderError(
            f"role {name!r} exists and is not a reader made by `flywheel db grant-reader` "
            f"(a member of {READERS_GROUP} with no administrative attribute); "
            "choose another name, or drop that role yourself first"
        )


def grant_reader(db: DbHandle, name: str, password: str | None = None) -> bool:
    """Create the reader role ``name`` (or bring an existing reader back to the reader's
    state): LOGIN, member of :data:`READERS_GROUP` only, read-only transactions by default,
    the group's grants applied to this database. ``password``, when given, is set (hashed
    here with the server's ``password_encryption``, so the statement never carries the
    plain text); when not, an existing password is kept. Returns True if the role was new.
    Raises :class:`ReaderError` if the role exists and is not a reader, or if the checks
    afterwards find a way for it to write or to read a private table."""
    check_name(name)
    pg = _pg(db)
    ensure_group(db)
    apply_grants(db)
    role = _role(pg, name)
    ident = sql.Identifier(name)
    group = sql.Identifier(READERS_GROUP)
    attributes = sql.SQL(
        "LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    )
    if role is None:
        pg.execute(sql.SQL("CREATE ROLE {} WITH {}").format(ident, attributes))
        try:
            pg.execute(sql.SQL("GRANT {} TO {}").format(group, ident))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ReaderError(
                f"{exc.diag.message_primary}: another role created {READERS_GROUP}; as a "
                f"superuser, GRANT {READERS_GROUP} TO <the role this command connects as> "
                "WITH ADMIN OPTION, or run this command as that superuser"
            ) from exc
    else:
        _refuse_non_reader(pg, name, role)
        pg.execute(sql.SQL("ALTER ROLE {} WITH {}").format(ident, attributes))
        for other in role[1]:
            if other != READERS_GROUP:
                pg.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(other), ident))
    # Privileges granted to the role directly (by hand) would bypass the group's list.
    schema = sql.Identifier(_schema(pg))
    for statement in (
        "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}",
        "REVOKE CREATE ON SCHEMA {schema} FROM {role}",
    ):
        pg.execute(sql.SQL(statement).format(schema=schema, role=ident))
    pg.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
    if password is not None:
        hashed = pg.pgconn.encrypt_password(password.encode(), name.encode())
        pg.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(hashed.decode())))
    problems = violations(db, name)
    if problems:
        raise ReaderError(
            f"role {name!r} would not be read-only here, so nothing was changed: "
            + "; ".join(problems)
        )
    return role is None


def violations(db: DbHandle, name: str) -> list[str]:
    """What ``name`` can do in this database that a reader must not, from any source (its
    own grants, a group's, PUBLIC's): write to or maintain a relation, use a sequence, read a
    :data:`PRIVATE` relation, own a relation, create in the schema or the database. Empty
    for a reader."""
    pg = _pg(db)
    writes = ["INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
    if pg.info.server_version >= 170000:
        writes.append("MAINTAIN")  # VACUUM, REFRESH MATERIALIZED VIEW, LOCK (PostgreSQL 17+)
    rows = pg.execute(
        """
        SELECT c.relname, p.name
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN unnest(%(privileges)s::text[]) AS p (name)
        WHERE n.nspname = current_schema()
          AND (p.name <> 'SELECT' OR c.relname = ANY(%(private)s))
          AND CASE WHEN c.relkind::text = ANY(%(kinds)s)
                   THEN has_table_privilege(%(role)s, c.oid, p.name) END
        UNION ALL
        SELECT c.relname, 'USAGE'
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema()
          -- CASE: the planner may test the privilege before the kind, and the function
          -- raises for a relation that is not a sequence.
          AND CASE WHEN c.relkind = 'S'
                   THEN has_sequence_privilege(%(role)s, c.oid, 'USAGE, UPDATE') END
        ORDER BY 1, 2
        """,
        {
            "role": name,
            "privileges": [*writes, "SELECT"],
            "kinds": list(_RELATION_KINDS),
            "private": list(PRIVATE),
        },
    ).fetchall()
    problems = [f"it has {privilege} on {relation}" for relation, privilege in rows]
    row = pg.execute(
        "SELECT has_schema_privilege(%(role)s, current_schema(), 'CREATE'), "
        "has_database_privilege(%(role)s, current_database(), 'CREATE'), "
        "EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
        "        WHERE r.rolname = %(role)s)",
        {"role": name},
    ).fetchone()
    assert row is not None
    schema_create, database_create, owns = row
    if schema_create:
        problems.append("it can create objects in the schema (REVOKE CREATE ON SCHEMA)")
    if database_create:
        problems.append("it can create schemas in the database (REVOKE CREATE ON DATABASE)")
    if owns:
        problems.append("it owns relations here (an owner can do anything with them)")
    return problems


def revoke_reader(db: DbHandle, name: str) -> bool:
    """Drop the reader role ``name``; False if there is no such role. Refuses a role that is
    not a reader. What the role owns in this database goes with it: only scratch of its own
    sessions can be there (large objects, made in a session that turned read-only off).
    The role is cluster-wide, so this removes it from every database on the server; its
    open sessions stay connected but lose the group's privileges at their next statement."""
    check_name(name)
    pg = _pg(db)
    role = _role(pg, name)
    if role is None:
        return False
    _refuse_non_reader(pg, name, role)
    ident = sql.Identifier(name)
    try:
        with pg.transaction():  # a savepoint: the caller's transaction stays usable
            pg.execute(sql.SQL("DROP ROLE {}").format(ident))
        return True
    except psycopg.errors.DependentObjectsStillExist:
        pass
    # DROP OWNED needs the role's own privileges (a superuser's), where a plain DROP ROLE
    # needs only CREATEROLE: tried only when the role left something behind.
    try:
        pg.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        pg.execute(sql.SQL("DROP ROLE {}").format(ident))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ReaderError(
            f"role {name!r} owns objects here (large objects its sessions made) and dropping "
            f"them takes a superuser ({exc.diag.message_primary}): run this command as one"
        ) from exc
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise ReaderError(
            f"role {name!r} still owns objects or holds privileges in other databases "
            f"({exc.diag.message_detail}); as a superuser, run DROP OWNED BY {name} in each "
            "database named there, then revoke again"
        ) from exc
    return True


def reader_url(database_url: str, name: str, password: str | None = None) -> str:
    """A libpq URL (for psql, DuckDB, psycopg) that logs in as ``name`` on the server and
    database of ``database_url``, keeping its query parameters (the socket directory of the
    embedded server, sslmode, ...)."""
    from urllib.parse import quote, urlencode

    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    user = quote(name, safe="")
    if password is not None:
        user += ":" + quote(password, safe="")
    host = url.host or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    if url.port:
        host += f":{url.port}"
    # Quoted by hand: SQLAlchemy encodes a space in a socket path as '+', which libpq reads
    # literally, and the '/' of a path as %2F, which is correct but unreadable.
    query = urlencode(
        [(k, v) for k, values in url.query.items() for v in _as_list(values)],
        quote_via=quote,
        safe="/",
    )
    database = quote(url.database or "", safe="")
    return f"postgresql://{user}@{host}/{database}" + (f"?{query}" if query else "")


def _as_list(value: str | tuple[str, ...]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
