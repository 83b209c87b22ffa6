"""The local-directory object store: layout, atomicity, verification and clear failures.

Runs in: the test process, on a real filesystem under ``tmp_path``. The behaviour shared
with S3 is run against both backends in ``tests/integration/test_store_s3.py``; this file
owns what only a directory can show (files on disk, temp files, permissions).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from dataflywheel.config import Settings
from dataflywheel.store import (
    CorruptObjectError,
    InvalidKeyError,
    LocalStore,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    StoreError,
    digest_of_bytes,
    digest_of_file,
    normalize_key,
    open_store,
    store_from_settings,
)

HELLO_DIGEST = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


def object_path(store: LocalStore, key: str) -> Path:
    return store.root.joinpath(*key.split("/"))


def stray_files(root: Path) -> list[Path]:
    """Everything under ``root`` that is not a finished object at its content address."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if rel != f"sha256/{name[:2]}/{name}" or digest_of_file(path) != name:
                found.append(path)
    return found


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"hidden_size": 8}',
        "weights/model-00001.safetensors": os.urandom(70_000),
        "weights/nested/deep/b.bin": b"\x00" * 1000,
        "tokenizer/vocab.txt": b"a\nb\nc\n",
        "empty.txt": b"",
        ".hidden": b"dotfiles are kept",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


# --- keys and digests --------------------------------------------------------------------


def test_digest_helpers_match_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)  # spans several read chunks
    (tmp_path / "f").write_bytes(data)
    assert digest_of_bytes(data) == hashlib.sha256(data).hexdigest()
    assert digest_of_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert digest_of_bytes(b"hello") == HELLO_DIGEST


@pytest.mark.parametrize(
    "given",
    [
        f"sha256/2c/{HELLO_DIGEST}",
        HELLO_DIGEST,
        HELLO_DIGEST.upper(),
        f"sha256:{HELLO_DIGEST}",
        f"  {HELLO_DIGEST}\n",
    ],
)
def test_keys_normalise(given: str) -> None:
    assert normalize_key(given) == f"sha256/2c/{HELLO_DIGEST}"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        HELLO_DIGEST[:-1],
        f"sha256/00/{HELLO_DIGEST}",  # shard does not match the digest
        f"sha256/2C/{HELLO_DIGEST.upper()}",
        f"md5/2c/{HELLO_DIGEST}",
        f"../2c/{HELLO_DIGEST}",
        f"sha256/2c/{HELLO_DIGEST}/../../x",
        "/etc/passwd",
    ],
)
def test_malformed_keys_are_rejected(store: LocalStore, bad: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError, match="invalid object key"):
        normalize_key(bad)
    for call in (store.get_bytes, store.exists, lambda k: store.get_file(k, tmp_path / "d")):
        with pytest.raises(InvalidKeyError):
            call(bad)


# --- round trips -------------------------------------------------------------------------


def test_put_bytes_lays_out_by_digest_and_round_trips(store: LocalStore) -> None:
    ref = store.put_bytes(b"hello")
    assert (ref.key, ref.digest, ref.size) == (f"sha256/2c/{HELLO_DIGEST}", HELLO_DIGEST, 5)
    assert object_path(store, ref.key).read_bytes() == b"hello"
    assert store.get_bytes(ref.key) == b"hello"
    assert store.get_bytes(HELLO_DIGEST) == b"hello"
    assert isinstance(store, ObjectStore)


def test_put_file_get_file_round_trip(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(2_500_000)
    (tmp_path / "in.bin").write_bytes(data)
    ref = store.put_file(tmp_path / "in.bin")
    assert ref.digest == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    dest = tmp_path / "out" / "nested" / "copy.bin"
    assert store.get_file(ref.key, dest) == dest
    assert dest.read_bytes() == data
    assert oct(dest.stat().st_mode & 0o777) == oct(0o644)


def test_put_is_idempotent_and_does_not_rewrite(store: LocalStore, tmp_path: Path) -> None:
    first = store.put_bytes(b"same bytes")
    before = object_path(store, first.key).stat()
    (tmp_path / "same").write_bytes(b"same bytes")
    assert store.put_bytes(b"same bytes") == first
    assert store.put_file(tmp_path / "same") == first
    after = object_path(store, first.key).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [info.key for info in store.list()] == [first.key]


def test_list_filters_by_prefix_and_skips_strays(store: LocalStore) -> None:
    refs = [store.put_bytes(bytes([i]) * (i + 1)) for i in range(20)]
    # Files a crashed writer or a person might leave: never reported as objects.
    shard = object_path(store, refs[0].key).parent
    (shard / ".flywheel-tmp-abc").write_bytes(b"partial")
    (shard / "notes.txt").write_text("hi")
    listed = list(store.list())
    assert listed == sorted((ObjectInfo(r.key, r.size) for r in refs), key=lambda i: i.key)
    one = refs[3].key[: len("sha256/ab")]
    assert {i.key for i in store.list(one)} == {r.key for r in refs if r.key.startswith(one)}
    assert list(store.list(refs[3].key)) == [ObjectInfo(refs[3].key, refs[3].size)]
    assert list(LocalStore(store.root / "never-created").list()) == []


def test_tree_round_trip(store: LocalStore, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "model")
    (tmp_path / "model" / "link.txt").symlink_to(tmp_path / "model" / "config.json")
    ref = store.put_tree(tmp_path / "model")
    manifest = json.loads(store.get_bytes(ref.key))
    paths = [f["path"] for f in manifest["files"]]
    assert manifest["kind"] == "tree" and paths == sorted(paths)
    assert set(paths) == set(files) | {"link.txt"}
    assert store.put_tree(tmp_path / "model") == ref  # deterministic
    out = store.get_tree(ref.key, tmp_path / "restored")
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    assert (out / "link.txt").read_bytes() == files["config.json"]  # links store content
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".flywheel-tmp-")]
    assert stray_files(store.root) == []


def test_get_tree_refuses_a_non_empty_destination(store: LocalStore, tmp_path: Path) -> None:
    make_tree(tmp_path / "model")
    ref = store.put_tree(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    store.get_tree(ref.key, tmp_path / "empty")  # an empty directory is fine
    with pytest.raises(StoreError, match="not an empty directory"):
        store.get_tree(ref.key, tmp_path / "empty")


def test_put_tree_refuses_symlinked_directories(store: LocalStore, tmp_path: Path) -> None:
    make_tree(tmp_path / "model")
    (tmp_path / "model" / "alias").symlink_to(tmp_path / "model" / "weights")
    with pytest.raises(StoreError, match="symlink to a directory"):
        store.put_tree(tmp_path / "model")


# --- verification and atomicity ----------------------------------------------------------


def test_flipped_byte_is_detected_and_nothing_is_written(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    ref = store.put_bytes(data)
    path = object_path(store, ref.key)
    damaged = bytearray(path.read_bytes())
    damaged[50_000] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptObjectError, match=ref.key):
        store.get_bytes(ref.key)
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(CorruptObjectError, match=ref.key):
        store.get_file(ref.key, dest)
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor a temp file


def test_corrupt_tree_member_leaves_no_destination(store: LocalStore, tmp_path: Path) -> None:
    make_tree(tmp_path / "model")
    ref = store.put_tree(tmp_path / "model")
    member = store.put_bytes(b"a\nb\nc\n")  # tokenizer/vocab.txt
    object_path(store, member.key).write_bytes(b"x\ny\nz\n")
    with pytest.raises(CorruptObjectError):
        store.get_tree(ref.key, tmp_path / "restored")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "objects"]


def test_get_file_of_a_missing_object(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match=HELLO_DIGEST):
        store.get_bytes(HELLO_DIGEST)
    with pytest.raises(ObjectNotFoundError):
        store.get_file(HELLO_DIGEST, tmp_path / "x")
    assert not store.exists(HELLO_DIGEST)
    assert not (tmp_path / "x").exists()


def test_no_temp_files_survive_failures(store: LocalStore, tmp_path: Path) -> None:
    store.check()
    ref = store.put_bytes(b"payload")
    (tmp_path / "dir-as-dest").mkdir()
    (tmp_path / "dir-as-dest" / "occupied").mkdir()
    with pytest.raises(StoreError, match="cannot write"):
        store.get_file(ref.key, tmp_path / "dir-as-dest" / "occupied")  # a directory
    with pytest.raises(StoreError, match="is a directory"):
        store.put_file(tmp_path)
    with pytest.raises(StoreError, match="cannot read"):
        store.put_file(tmp_path / "missing.bin")
    assert os.listdir(tmp_path / "dir-as-dest") == ["occupied"]
    assert stray_files(store.root) == []


@pytest.mark.parametrize(
    "path",
    ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "a//b", "./a", "a\\..\\b", ""],
)
def test_manifest_escaping_the_destination_is_rejected(
    store: LocalStore, tmp_path: Path, path: str
) -> None:
    payload = store.put_bytes(b"evil")
    files = [
        {"path": "ok.txt", "digest": payload.digest, "size": 4},
        {"path": path, "digest": payload.digest, "size": 4},
    ]
    manifest = store.put_bytes(json.dumps({"kind": "tree", "files": files}).encode())
    dest = tmp_path / "work" / "dest"
    with pytest.raises(StoreError, match="not a valid tree manifest"):
        store.get_tree(manifest.key, dest)
    assert not (tmp_path / "work").exists()  # validated before anything is written
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (b"not json", "not JSON"),
        (b'{"kind": "blob"}', "kind"),
        (b'{"kind": "tree", "files": {}}', "not a list"),
        (b'{"kind":"tree","files":[{"path":"a","digest":"00","size":1}]}', "digest"),
        (b'{"kind":"tree","files":[{"path":"a","digest":"' + b"0" * 64 + b'","size":-1}]}', "size"),
    ],
)
def test_malformed_manifests_are_rejected(
    store: LocalStore, tmp_path: Path, doc: bytes, why: str
) -> None:
    ref = store.put_bytes(doc)
    with pytest.raises(StoreError, match=why):
        store.get_tree(ref.key, tmp_path / "dest")


def test_manifest_with_file_and_directory_of_the_same_name(
    store: LocalStore, tmp_path: Path
) -> None:
    blob = store.put_bytes(b"x")
    files = [{"path": p, "digest": blob.digest, "size": 1} for p in ("a", "a/b")]
    manifest = store.put_bytes(json.dumps({"kind": "tree", "files": files}).encode())
    with pytest.raises(StoreError, match="both a file and a directory"):
        store.get_tree(manifest.key, tmp_path / "dest")


# --- unusable roots ----------------------------------------------------------------------


def test_root_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    # chmod cannot stop root, but no user can create a directory inside a regular file.
    (tmp_path / "data").write_text("I am a file, not a directory")
    store = LocalStore(tmp_path / "data" / "objects")
    for call in (store.check, lambda: store.put_bytes(b"x")):
        with pytest.raises(StoreError) as info:
            call()
        assert "FLYWHEEL_STORE_URI" in str(info.value)
        assert "FLYWHEEL_DATA_DIR" in str(info.value)
    assert (tmp_path / "data").read_text() == "I am a file, not a directory"


def test_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "objects").write_text("")
    with pytest.raises(StoreError, match="FLYWHEEL_STORE_URI"):
        LocalStore(tmp_path / "objects").check()


def test_read_only_root_for_an_unprivileged_user() -> None:
    """A service user and a read-only data dir: the deployment mistake check() is for."""
    # Not tmp_path: pytest makes it 0700, which would fail for the wrong reason.
    base = Path(tempfile.mkdtemp(prefix="flywheel-ro-"))
    objects = base / "objects"
    objects.mkdir()
    os.chmod(base, 0o755)
    os.chmod(objects, 0o555)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root (which ignores modes), then try the store
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                LocalStore(objects).check()
                message = "check() passed"
            except StoreError as exc:
                message, status = str(exc), 3
            os.write(write_end, message.encode())
        finally:
            os._exit(status)
    os.close(write_end)
    # A forked child of a threaded process could in theory block on a lock copied while
    # held; never let that hang the suite.
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the unprivileged child did not finish in 30 s")
    status = done[1]
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    try:
        assert os.waitstatus_to_exitcode(status) == 3, message
        assert "FLYWHEEL_STORE_URI" in message and "FLYWHEEL_DATA_DIR" in message
        assert "Permission denied" in message
        assert list(objects.iterdir()) == []
    finally:
        shutil.rmtree(base)


# --- opening a store ---------------------------------------------------------------------


def test_open_store_and_settings(tmp_path: Path) -> None:
    store = store_from_settings(Settings(data_dir=tmp_path / "data", store_uri=None))
    assert isinstance(store, LocalStore)
    assert store.uri == str((tmp_path / "data" / "objects").resolve())
    store.check()
    assert isinstance(open_store(f"file://{tmp_path}/o"), LocalStore)
    assert open_store(str(tmp_path / "o")).uri == str(tmp_path / "o")
    for bad in ("", "gs://bucket/x", "s3://"):
        with pytest.raises(StoreError, match="FLYWHEEL_STORE_URI"):
            open_store(bad)
