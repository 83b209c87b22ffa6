"""The object store over real HTTP S3 (moto's server), and the behaviour both backends share.

Runs in: the test process, with moto's S3 server on a free port of 127.0.0.1 in a thread.
Nothing is patched: boto3 talks HTTP to the server exactly as it would to MinIO or AWS. The
first half runs the same behaviour suite against a local directory and ``s3://bucket/prefix``;
the second half covers what only S3 has (missing buckets, credentials, endpoints, multipart).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from dataflywheel.config import Settings
from dataflywheel.store import (
    CorruptObjectError,
    InvalidKeyError,
    LocalStore,
    ObjectNotFoundError,
    ObjectStore,
    S3Store,
    StoreError,
    open_store,
    store_from_settings,
)

MiB = 1 << 20
KEY_ID, SECRET = "testing", "testing"  # moto accepts anything until auth is switched on


@functools.cache  # building a boto3 client costs ~0.2 s; the tests only need one
def s3_client(endpoint: str, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def bucket(moto_endpoint: str) -> str:
    # moto's state lives in the process; a unique bucket keeps other tests' objects out.
    name = f"flywheel-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    return name


def s3_store(endpoint: str, bucket: str, **options: Any) -> S3Store:
    """A store under a fresh prefix of the shared bucket."""
    return S3Store(
        f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}",
        endpoint_url=endpoint,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        **options,
    )


@dataclass
class Backend:
    store: ObjectStore
    overwrite: Callable[[str, bytes], None]  # replace an object's bytes behind the store's back


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        local = LocalStore(tmp_path / "objects")
        return Backend(local, lambda key, data: local.root.joinpath(key).write_bytes(data))
    endpoint = request.getfixturevalue("moto_endpoint")
    name = request.getfixturevalue("bucket")
    remote = s3_store(endpoint, name)
    client = s3_client(endpoint)

    def overwrite(key: str, data: bytes) -> None:
        client.put_object(Bucket=name, Key=f"{remote.prefix}/{key}", Body=data)

    return Backend(remote, overwrite)


def write_tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"layers": 2}',
        "a/b/c/deep.bin": os.urandom(200_000),
        "a/sibling.txt": b"sibling",
        "tokenizer.json": b"{}",
        "empty": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def fifo_feeding(path: Path, first: bytes, second: bytes) -> threading.Thread:
    """A named pipe that yields ``first`` to its first reader and ``second`` to the next:
    a file whose content changes between the store's hashing pass and its upload pass."""
    os.mkfifo(path)

    def feed() -> None:
        for data in (first, second):
            try:
                with path.open("wb") as f:
                    f.write(data)
            except BrokenPipeError:
                return
            time.sleep(0.2)  # let the reader see EOF and close before reopening

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def unblock(path: Path, thread: threading.Thread) -> None:
    """Release a feeder still waiting for a reader, so no thread outlives the test."""
    while thread.is_alive():
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        while os.read(fd, MiB):
            pass
        os.close(fd)
        thread.join(0.5)


# --- the shared behaviour suite ----------------------------------------------------------


def test_bytes_round_trip_with_deterministic_keys(backend: Backend) -> None:
    store = backend.store
    data = b"the flywheel turns"
    digest = hashlib.sha256(data).hexdigest()
    ref = store.put_bytes(data)
    assert (ref.key, ref.digest, ref.size) == (f"sha256/{digest[:2]}/{digest}", digest, len(data))
    assert store.get_bytes(ref.key) == data
    assert store.get_bytes(digest) == data  # a bare digest is a key too
    assert store.put_bytes(b"") == store.put_bytes(b"")
    assert store.get_bytes(store.put_bytes(b"").key) == b""
    assert isinstance(store, ObjectStore)


def test_file_round_trip_and_idempotent_puts(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    data = os.urandom(3 * MiB + 1)
    (tmp_path / "in.bin").write_bytes(data)
    ref = store.put_file(tmp_path / "in.bin")
    assert ref == store.put_file(tmp_path / "in.bin") == store.put_bytes(data)
    assert [(i.key, i.size) for i in store.list()] == [(ref.key, len(data))]
    dest = tmp_path / "out" / "sub" / "copy.bin"
    assert store.get_file(ref.key, dest) == dest
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["copy.bin"]  # no temp file left beside it


def test_exists_and_list(backend: Backend) -> None:
    store = backend.store
    refs = {store.put_bytes(f"object {i}".encode() * (i + 1)) for i in range(12)}
    listed = list(store.list())
    assert [i.key for i in listed] == sorted(r.key for r in refs)
    assert {(i.key, i.size) for i in listed} == {(r.key, r.size) for r in refs}
    some = sorted(refs, key=lambda r: r.key)[5]
    shard = some.key[: len("sha256/ab")]
    assert {i.key for i in store.list(shard)} == {r.key for r in refs if r.key.startswith(shard)}
    assert store.exists(some.key) and store.exists(some.digest)
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(missing)
    with pytest.raises(ObjectNotFoundError, match=missing):
        store.get_bytes(missing)


def test_tree_round_trip(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    files = write_tree(tmp_path / "model")
    ref = store.put_tree(tmp_path / "model")
    assert store.put_tree(tmp_path / "model") == ref  # same folder, same key
    manifest = json.loads(store.get_bytes(ref.key))
    assert manifest["kind"] == "tree"
    assert [f["path"] for f in manifest["files"]] == sorted(files)
    for entry in manifest["files"]:
        assert entry["digest"] == hashlib.sha256(files[entry["path"]]).hexdigest()
        assert store.exists(entry["digest"])
    out = store.get_tree(ref.key, tmp_path / "restored")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        files
    )
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data


def test_corrupted_object_is_detected(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    data = os.urandom(64_000)
    ref = store.put_bytes(data)
    damaged = bytearray(data)
    damaged[1234] ^= 0xFF
    backend.overwrite(ref.key, bytes(damaged))
    with pytest.raises(CorruptObjectError, match=ref.key):
        store.get_bytes(ref.key)
    with pytest.raises(CorruptObjectError, match=ref.key):
        store.get_file(ref.key, tmp_path / "out" / "f.bin")
    assert list((tmp_path / "out").iterdir()) == []
    # A damaged member fails the whole tree, and no half-built tree is left.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(data)
    tree = store.put_tree(tmp_path / "model")
    with pytest.raises(CorruptObjectError):
        store.get_tree(tree.key, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".flywheel-tmp-")]


def test_manifest_path_traversal_is_rejected(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    payload = store.put_bytes(b"pwned")
    for path in ("../escape.txt", "/etc/escape.txt", "ok/../../escape.txt"):
        doc = {"kind": "tree", "files": [{"path": path, "digest": payload.digest, "size": 5}]}
        manifest = store.put_bytes(json.dumps(doc).encode())
        with pytest.raises(StoreError, match="escapes the destination"):
            store.get_tree(manifest.key, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape.txt").exists()


def test_malformed_keys_are_rejected(backend: Backend, tmp_path: Path) -> None:
    for bad in ("nope", "sha256/00/" + "1" * 64, "../../etc/passwd"):
        with pytest.raises(InvalidKeyError, match="invalid object key"):
            backend.store.get_bytes(bad)
        with pytest.raises(InvalidKeyError):
            backend.store.get_file(bad, tmp_path / "x")


def test_file_changing_while_stored_stores_nothing(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    fifo = tmp_path / "changing"
    feeder = fifo_feeding(fifo, b"version one", b"version two")
    try:
        with pytest.raises(StoreError, match="changed while it was being stored"):
            store.put_file(fifo)
    finally:
        unblock(fifo, feeder)
    assert list(store.list()) == []


def test_check_and_pickling(backend: Backend) -> None:
    backend.store.check()
    backend.store.check()  # the probe is idempotent
    ref = backend.store.put_bytes(b"shipped to a Ray worker")
    # Ray pickles what it ships to workers; the S3 client is rebuilt on arrival.
    clone = pickle.loads(pickle.dumps(backend.store))
    assert clone.uri == backend.store.uri
    assert clone.get_bytes(ref.key) == b"shipped to a Ray worker"


# --- S3 only -----------------------------------------------------------------------------


def test_s3_layout_under_the_prefix(moto_endpoint: str, bucket: str) -> None:
    store = s3_store(moto_endpoint, bucket)
    ref = store.put_bytes(b"where does it go")
    head = s3_client(moto_endpoint).head_object(Bucket=bucket, Key=f"{store.prefix}/{ref.key}")
    assert head["ContentLength"] == ref.size
    assert store.uri == f"s3://{bucket}/{store.prefix}"


def test_large_file_goes_up_in_parts(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = s3_store(moto_endpoint, bucket, multipart_threshold=8 * MiB, part_size=5 * MiB)
    data = os.urandom(20 * MiB)
    (tmp_path / "big.bin").write_bytes(data)
    ref = store.put_file(tmp_path / "big.bin")
    assert ref.digest == hashlib.sha256(data).hexdigest()
    client = s3_client(moto_endpoint)
    head = client.head_object(Bucket=bucket, Key=f"{store.prefix}/{ref.key}")
    assert head["ETag"].strip('"').endswith("-4")  # 20 MiB in 5 MiB parts
    assert store.put_file(tmp_path / "big.bin") == ref
    out = store.get_file(ref.key, tmp_path / "big.out")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == ref.digest
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_multipart_of_a_changing_file_is_aborted(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    store = s3_store(moto_endpoint, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    fifo = tmp_path / "changing"
    first, second = os.urandom(6 * MiB), os.urandom(6 * MiB)
    feeder = fifo_feeding(fifo, first, second)
    try:
        with pytest.raises(StoreError, match="changed while it was being stored"):
            store.put_file(fifo)
    finally:
        unblock(fifo, feeder)
    assert list(store.list()) == []
    uploads = s3_client(moto_endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"].startswith(store.prefix)] == []


def test_missing_bucket_names_the_bucket(moto_endpoint: str, tmp_path: Path) -> None:
    store = open_store(
        "s3://no-such-bucket-here/objects",
        endpoint_url=moto_endpoint,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
    )
    (tmp_path / "f").write_bytes(b"x")
    calls = [
        store.check,
        lambda: store.put_bytes(b"x"),
        lambda: store.put_file(tmp_path / "f"),
        lambda: store.get_bytes("0" * 64),
        lambda: list(store.list()),
    ]
    for call in calls:
        with pytest.raises(StoreError) as info:
            call()
        assert "'no-such-bucket-here' does not exist" in str(info.value)
        assert "FLYWHEEL_STORE_URI" in str(info.value)


@pytest.fixture
def moto_auth(moto_endpoint: str) -> Iterator[dict[str, str]]:
    """Switch on moto's IAM checks (off by default) and yield a valid key pair for S3.

    The switch is process-wide in moto, so it is switched off again however the test ends.
    """
    iam = boto3.client(
        "iam",
        endpoint_url=moto_endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    user = f"flywheel-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]

    def reset_auth(after: bytes) -> None:
        request = urllib.request.Request(
            f"{moto_endpoint}/moto-api/reset-auth",
            data=after,  # requests served before auth starts; "inf" means never
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    reset_auth(b"0")
    try:
        yield {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    finally:
        reset_auth(b"inf")


def test_wrong_credentials_name_the_settings(
    moto_endpoint: str, bucket: str, moto_auth: dict[str, str]
) -> None:
    good = S3Store(f"s3://{bucket}/auth", endpoint_url=moto_endpoint, **moto_auth)
    good.check()
    ref = good.put_bytes(b"authorised")
    wrong = {
        "InvalidAccessKeyId": ("AKIAWRONGWRONGWRONG0", moto_auth["secret_access_key"]),
        "SignatureDoesNotMatch": (moto_auth["access_key_id"], "not-the-secret"),
    }
    for code, (key_id, secret) in wrong.items():
        bad = S3Store(
            f"s3://{bucket}/auth",
            endpoint_url=moto_endpoint,
            access_key_id=key_id,
            secret_access_key=secret,
        )
        for call in (
            bad.check,
            lambda b=bad: b.put_bytes(b"x"),
            lambda b=bad: b.get_bytes(ref.key),
        ):
            with pytest.raises(StoreError) as info:
                call()
            message = str(info.value)
            assert code in message
            assert "FLYWHEEL_S3_ACCESS_KEY_ID" in message
            assert "FLYWHEEL_S3_SECRET_ACCESS_KEY" in message


def test_half_configured_credentials_are_refused() -> None:
    with pytest.raises(StoreError, match="FLYWHEEL_S3_SECRET_ACCESS_KEY"):
        open_store("s3://bucket/x", access_key_id="only-the-id")


def test_unreachable_endpoint_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = open_store(
        "s3://bucket/objects",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
    )
    started = time.monotonic()
    for call in (store.check, lambda: store.put_bytes(b"x"), lambda: list(store.list())):
        with pytest.raises(StoreError, match="FLYWHEEL_S3_ENDPOINT_URL"):
            call()
    assert time.monotonic() - started < 20


def test_store_from_settings_opens_s3(moto_endpoint: str, bucket: str) -> None:
    settings = Settings(
        store_uri=f"s3://{bucket}/from-settings",
        s3_endpoint_url=moto_endpoint,
        s3_region="us-east-1",
        s3_access_key_id=KEY_ID,
        s3_secret_access_key=SECRET,
    )
    store = store_from_settings(settings)
    assert isinstance(store, S3Store)
    store.check()
    assert store.get_bytes(store.put_bytes(b"configured").key) == b"configured"
    assert SECRET not in repr(store)
