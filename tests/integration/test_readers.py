"""Read-only roles for analysts on a real PostgreSQL: what a reader can read, what it is refused
(with PostgreSQL's own permission errors), idempotent grants, revocation, the grants
re-applied by migrations, and ``flywheel db grant-reader`` / ``revoke-reader`` as users run
them.

Roles are cluster-wide while the databases are per test: every test makes its readers with
unique names and drops them afterwards. The group role ``flywheel_readers`` is left on the
test server (every database the tests migrate once it exists holds grants to it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors, sql
from sqlalchemy.engine import Engine, make_url

from dataflywheel.db import migrate, readers
from dataflywheel.db.session import make_engine, session_scope
from tests.cli_support import flywheel

PASSWORD = secrets.token_hex(8)


def _admin(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def role_name(db_url: str) -> Iterator[Callable[[], str]]:
    """Makes unique role names; drops every role so named when the test ends (with what
    was granted to it by hand in the test's database, which would block the drop)."""
    made: list[str] = []

    def make() -> str:
        made.append(f"reader_{os.getpid()}_{secrets.token_hex(4)}")
        return made[-1]

    yield make
    with psycopg.connect(_admin(db_url), autocommit=True) as conn:
        for name in made:
            role = sql.Identifier(name)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                conn.execute(sql.SQL("DROP ROLE {}").format(role))


@pytest.fixture
def reader(engine: Engine, role_name: Callable[[], str]) -> str:
    """A reader role on the test database (with a password, for servers that check it)."""
    name = role_name()
    with session_scope(engine) as session:
        assert readers.grant_reader(session, name, PASSWORD)
    return name


def _connect(db_url: str, name: str, password: str | None = PASSWORD) -> psycopg.Connection:
    return psycopg.connect(readers.reader_url(db_url, name, password))


def _seed(engine: Engine) -> None:
    """One run, round, prompt, base checkpoint, sample and score, and an API key."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO runs (id, name, spec, spec_hash) OVERRIDING SYSTEM VALUE
                    VALUES (1, 'r', '{}', repeat('a', 64));
                INSERT INTO rounds (id, run_id, index, seed) OVERRIDING SYSTEM VALUE
                    VALUES (1, 1, 0, 7);
                INSERT INTO prompts (id, content_hash, text_hash, prompt_set, split, text)
                    OVERRIDING SYSTEM VALUE
                    VALUES (1, repeat('b', 64), repeat('c', 64), 'arith', 'train', '1+1?');
                INSERT INTO checkpoints (id, run_id, status) OVERRIDING SYSTEM VALUE
                    VALUES (1, 1, 'base');
                INSERT INTO samples (id, round_id, prompt_id, checkpoint_id, sample_index,
                                     seed, sampling_params, text) OVERRIDING SYSTEM VALUE
                    VALUES (1, 1, 1, 1, 0, 3, '{}', '2');
                INSERT INTO scores (sample_id, verifier, verifier_version, value, passed)
                    VALUES (1, 'exact_answer', 'v1', 1.0, true);
                INSERT INTO api_keys (name, prefix, token_hash)
                    VALUES ('ci', 'fw_abcdefg', repeat('d', 64));
                """
            )
        )


def test_reader_reads_the_lineage(engine: Engine, db_url: str, reader: str) -> None:
    _seed(engine)
    with _connect(db_url, reader) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (reader,)
        assert conn.execute("SELECT text FROM samples").fetchall() == [("2",)]
        joined = conn.execute(
            "SELECT p.text, s.text, sc.passed FROM samples s "
            "JOIN prompts p ON p.id = s.prompt_id JOIN scores sc ON sc.sample_id = s.id"
        ).fetchall()
        assert joined == [("1+1?", "2", True)]
        for table in readers.READABLE:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))


@pytest.mark.parametrize("table", sorted(readers.PRIVATE))
def test_reader_is_refused_the_private_tables(
    engine: Engine, db_url: str, reader: str, table: str
) -> None:
    _seed(engine)
    with _connect(db_url, reader) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))


WRITES = [
    "INSERT INTO samples (round_id, prompt_id, checkpoint_id, sample_index, seed, "
    "sampling_params, text) VALUES (1, 1, 1, 1, 3, '{}', 'x')",
    "UPDATE scores SET passed = false",
    "DELETE FROM scores",
    "TRUNCATE scores",
    "INSERT INTO api_keys (name, prefix, token_hash) VALUES ('me', 'x', 'y')",
    "UPDATE stage_shards SET status = 'done'",
    "DELETE FROM alembic_version",
    "SELECT nextval(pg_get_serial_sequence('samples', 'id'))",
    "SELECT setval(pg_get_serial_sequence('runs', 'id'), 1000)",
    "CREATE TABLE public.scratch (x int)",
    "CREATE VIEW public.mine AS SELECT 1 AS x",
    "CREATE SCHEMA scratch",
    "ALTER TABLE samples ADD COLUMN x int",
    "DROP TABLE scores",
    "CREATE INDEX ON samples (text)",
    "COMMENT ON TABLE samples IS 'x'",
    "LOCK TABLE samples IN ACCESS EXCLUSIVE MODE",
]


@pytest.mark.parametrize("statement", WRITES)
def test_reader_cannot_write(engine: Engine, db_url: str, reader: str, statement: str) -> None:
    _seed(engine)
    with _connect(db_url, reader) as conn:
        # The second guard: the role's transactions are read-only by default...
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        # (Some statements check privileges first.)
        with pytest.raises((errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege)):
            conn.execute(statement)
        conn.rollback()
        # ...but a session may turn that off; the privileges refuse the write all the same.
        conn.execute("SET default_transaction_read_only = off")
        conn.commit()
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement)
    with engine.connect() as admin:
        assert admin.execute(sa.text("SELECT count(*) FROM samples")).scalar_one() == 1
        assert admin.execute(sa.text("SELECT count(*) FROM scores")).scalar_one() == 1


def test_views_are_readable_only_once_classified(
    engine: Engine, db_url: str, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view runs with its owner's privileges, so one over a private table would leak it:
    views go through the same explicit list as tables, and a new one starts private."""
    _seed(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE VIEW passed_samples AS SELECT s.id, s.text FROM samples s "
                "JOIN scores sc ON sc.sample_id = s.id WHERE sc.passed"
            )
        )
        conn.execute(sa.text("CREATE VIEW key_names AS SELECT name FROM api_keys"))
    with _connect(db_url, reader) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM passed_samples")

    monkeypatch.setattr(readers, "READABLE", (*readers.READABLE, "passed_samples"))
    with session_scope(engine) as session:
        assert "passed_samples" in readers.apply_grants(session)
    with _connect(db_url, reader) as conn:
        assert conn.execute("SELECT id, text FROM passed_samples").fetchall() == [(1, "2")]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM key_names")


def test_every_relation_at_head_is_classified(engine: Engine) -> None:
    """Views or tables a migration creates outside models.py are covered too."""
    with engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            )
        ).scalars()
        unclassified = set(names) - set(readers.READABLE) - set(readers.PRIVATE)
    assert not unclassified, f"classify {sorted(unclassified)} in dataflywheel/db/readers.py"


def _role_state(engine: Engine, name: str) -> tuple:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT r.rolcanlogin, r.rolsuper, r.rolconfig, a.rolpassword, "
                "ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g "
                "      ON g.oid = m.roleid WHERE m.member = r.oid) "
                "FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = :name"
            ),
            {"name": name},
        ).one()


def test_grant_is_idempotent_and_keeps_the_password(
    engine: Engine, db_url: str, reader: str
) -> None:
    first = _role_state(engine, reader)
    login, superuser, config, password, groups = first
    assert login and not superuser
    assert config == ["default_transaction_read_only=on"]
    assert groups == [readers.READERS_GROUP]
    assert password and PASSWORD not in password  # stored hashed, never the plain text

    with session_scope(engine) as session:
        assert readers.grant_reader(session, reader) is False  # existed: updated, not created
        assert readers.violations(session, reader) == []
    assert _role_state(engine, reader) == first  # the password was kept

    with session_scope(engine) as session:
        readers.grant_reader(session, reader, "another one")
    assert _role_state(engine, reader)[3] != password
    with _connect(db_url, reader, "another one") as conn:
        conn.execute("SELECT count(*) FROM samples")


def test_grant_repairs_a_reader_given_more_by_hand(
    engine: Engine, db_url: str, reader: str, role_name: Callable[[], str]
) -> None:
    writer = role_name()
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {writer} NOLOGIN"))
        conn.execute(sa.text(f"GRANT INSERT ON samples TO {writer}"))
        conn.execute(sa.text(f"GRANT {writer} TO {reader}"))
        conn.execute(sa.text(f"GRANT DELETE ON scores TO {reader}"))
        conn.execute(sa.text(f"GRANT SELECT ON api_keys TO {readers.READERS_GROUP}"))
        conn.execute(sa.text(f"ALTER ROLE {reader} SET default_transaction_read_only = off"))
    with session_scope(engine) as session:
        assert set(readers.violations(session, reader)) == {
            "it has INSERT on samples",
            "it has DELETE on scores",
            "it has SELECT on api_keys",
        }
        readers.grant_reader(session, reader)
        assert readers.violations(session, reader) == []
    assert _role_state(engine, reader)[2] == ["default_transaction_read_only=on"]
    assert _role_state(engine, reader)[4] == [readers.READERS_GROUP]


def test_grant_refuses_a_role_it_did_not_make(engine: Engine, role_name: Callable[[], str]) -> None:
    other = role_name()
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {other} LOGIN"))
        admin = conn.execute(sa.text("SELECT current_user")).scalar_one()
    for name in (other, admin):
        refusal = "not a reader" if name == other else "connects as"
        with session_scope(engine) as session, pytest.raises(readers.ReaderError, match=refusal):
            readers.grant_reader(session, name)
        with session_scope(engine) as session, pytest.raises(readers.ReaderError):
            readers.revoke_reader(session, name)
    assert _role_state(engine, other)[2] is None  # untouched


def test_revoke_drops_the_role(engine: Engine, db_url: str, reader: str) -> None:
    _seed(engine)
    with _connect(db_url, reader) as session_open_during_revoke:
        with session_scope(engine) as session:
            assert readers.revoke_reader(session, reader) is True
        # Connected sessions stay, but the privileges went with the group membership.
        with pytest.raises(errors.InsufficientPrivilege):
            session_open_during_revoke.execute("SELECT * FROM samples")
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        _connect(db_url, reader)
    with session_scope(engine) as session:
        assert readers.revoke_reader(session, reader) is False


def test_revoke_drops_what_the_reader_made(engine: Engine, db_url: str, reader: str) -> None:
    """With read-only turned off a session can still make large objects (no privilege
    governs their creation); they are the reader's own and go with it."""
    with _connect(db_url, reader) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.commit()  # the next transaction is the first to start read-write
        conn.execute("SELECT lo_from_bytea(0, 'scratch')")
        conn.commit()
    with session_scope(engine) as session:
        assert readers.revoke_reader(session, reader) is True
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_largeobject_metadata")).scalar() == 0


def test_migrations_reapply_the_grants(
    engine: Engine, empty_db_url: str, role_name: Callable[[], str]
) -> None:
    """Each migration re-applies the list: readable tables a revision creates are granted,
    private ones and tables made outside the list stay private (no default privileges)."""
    with session_scope(engine) as session:
        readers.ensure_group(session)
    fresh = make_engine(empty_db_url)
    try:
        migrate.upgrade(fresh, "0001")

        def can_read(table: str) -> bool:
            with fresh.connect() as conn:
                return conn.execute(
                    sa.text("SELECT has_table_privilege(:group, :table, 'SELECT')"),
                    {"group": readers.READERS_GROUP, "table": table},
                ).scalar_one()

        assert can_read("samples") and not can_read("stage_shards")
        migrate.upgrade(fresh)
        assert can_read("samples") and not can_read("api_keys")
        with fresh.begin() as conn:
            conn.execute(sa.text("CREATE TABLE notes (x int)"))
        assert not can_read("notes")
        migrate.downgrade(fresh, "0002")  # a revision ran: the list is applied again
        assert can_read("samples") and not can_read("notes")
        name = role_name()
        with session_scope(fresh) as session:
            readers.grant_reader(session, name, PASSWORD)
        with _connect(empty_db_url, name) as conn:
            conn.execute("SELECT count(*) FROM checkpoints")
    finally:
        fresh.dispose()


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_cli_grant_prints_a_url_that_connects(
    engine: Engine, db_url: str, cli_env: dict[str, str], role_name: Callable[[], str]
) -> None:
    _seed(engine)
    cli_env["FLYWHEEL_DATABASE_URL"] = db_url
    name = role_name()
    args = ("db", "grant-reader", name, "--password", PASSWORD, "--show-password")
    granted = flywheel(*args, env=cli_env)
    assert granted.returncode == 0, granted.stderr
    assert f"created read-only role {name}" in granted.stderr
    url = granted.stdout.strip()
    assert url.startswith(f"postgresql://{name}:{PASSWORD}@") and "\n" not in url
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (1,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT token_hash FROM api_keys")

    again = flywheel(*args, env=cli_env)
    assert again.returncode == 0, again.stderr
    assert f"updated read-only role {name}" in again.stderr and again.stdout.strip() == url
    hidden = flywheel("db", "grant-reader", name, env=cli_env)
    assert hidden.returncode == 0 and PASSWORD not in hidden.stdout + hidden.stderr

    revoked = flywheel("db", "revoke-reader", name, env=cli_env)
    assert revoked.returncode == 0 and f"dropped role {name}" in revoked.stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url)
    twice = flywheel("db", "revoke-reader", name, env=cli_env)
    assert twice.returncode == 0 and "nothing to revoke" in twice.stdout

    bad = flywheel("db", "grant-reader", "Robert'); DROP TABLE samples", env=cli_env)
    assert bad.returncode == 1 and "lowercase letters" in bad.stderr


def test_cli_with_the_embedded_server(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The embedded server listens on its Unix socket only: the URL names the socket
    directory, and a local psql, psycopg or DuckDB connects through it."""
    assert flywheel("db", "upgrade", env=cli_env).returncode == 0
    try:
        granted = flywheel("db", "grant-reader", "analyst", env=cli_env)
        assert granted.returncode == 0, granted.stderr
        assert "Unix socket" in granted.stderr
        url = granted.stdout.strip()
        socket_dir = make_url(url).query["host"]
        assert Path(socket_dir, ".s.PGSQL.5432").is_socket()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (
                "analyst",
                "flywheel",
            )
            assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert flywheel("db", "revoke-reader", "analyst", env=cli_env).returncode == 0
    finally:
        flywheel("db", "stop", env=cli_env)


def test_pandas_reads_through_sqlalchemy(engine: Engine, db_url: str, reader: str) -> None:
    """The docs' pandas recipe: the reader URL with the psycopg driver named."""
    pd = pytest.importorskip("pandas")
    _seed(engine)
    url = readers.reader_url(db_url, reader, PASSWORD).replace(
        "postgresql://", "postgresql+psycopg://", 1
    )
    analyst = sa.create_engine(url)
    try:
        frame = pd.read_sql("SELECT id, text FROM samples", analyst)
    finally:
        analyst.dispose()
    assert frame.to_dict("records") == [{"id": 1, "text": "2"}]
