"""``flywheel store`` as a user runs it, locally and against S3 over HTTP (moto)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import boto3
import pytest

from tests.cli_support import flywheel

KEY_ID, SECRET = "testing", "testing"


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "AWS_"))}
    env["FLYWHEEL_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture
def s3_env(base_env: dict[str, str], moto_endpoint: str) -> dict[str, str]:
    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return base_env | {
        "FLYWHEEL_STORE_URI": f"s3://{bucket}/objects",
        "FLYWHEEL_S3_ENDPOINT_URL": moto_endpoint,
        "FLYWHEEL_S3_REGION": "us-east-1",
        "FLYWHEEL_S3_ACCESS_KEY_ID": KEY_ID,
        "FLYWHEEL_S3_SECRET_ACCESS_KEY": SECRET,
    }


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_put_get_ls_file_and_folder(
    backend: str, base_env: dict[str, str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = base_env if backend == "local" else request.getfixturevalue("s3_env")
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(100_000))
    put = flywheel("store", "put", str(source), env=env)
    assert put.returncode == 0, put.stderr
    key = put.stdout.strip()
    assert key.startswith("sha256/")
    # Idempotent: the same content gives the same key and stores nothing new.
    assert flywheel("store", "put", str(source), env=env).stdout.strip() == key

    fetched = tmp_path / "fetched.bin"
    got = flywheel("store", "get", key, str(fetched), env=env)
    assert got.returncode == 0, got.stderr
    assert fetched.read_bytes() == source.read_bytes()

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden": 128}')
    (model / "sub" / "weights.safetensors").write_bytes(os.urandom(5000))
    tree_key = flywheel("store", "put", str(model), env=env).stdout.strip()
    restored = tmp_path / "restored"
    got_tree = flywheel("store", "get", tree_key, str(restored), "--tree", env=env)
    assert got_tree.returncode == 0, got_tree.stderr
    assert (restored / "config.json").read_text() == '{"hidden": 128}'
    assert (restored / "sub" / "weights.safetensors").read_bytes() == (
        model / "sub" / "weights.safetensors"
    ).read_bytes()

    listing = flywheel("store", "ls", env=env)
    assert listing.returncode == 0
    keys = {line.split()[1] for line in listing.stdout.splitlines()}
    assert {key, tree_key} <= keys
    assert "4 object(s)" in listing.stderr  # file, manifest, and the folder's two files


def test_missing_bucket_is_one_clear_error(s3_env: dict[str, str], tmp_path: Path) -> None:
    s3_env["FLYWHEEL_STORE_URI"] = "s3://no-such-bucket-here/objects"
    source = tmp_path / "f.txt"
    source.write_text("hello")
    result = flywheel("store", "put", str(source), env=s3_env)
    assert result.returncode == 1
    assert "no-such-bucket-here" in result.stderr
    assert "FLYWHEEL_STORE_URI" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_endpoint_is_one_clear_error(s3_env: dict[str, str], tmp_path: Path) -> None:
    s3_env["FLYWHEEL_S3_ENDPOINT_URL"] = "http://127.0.0.1:9"
    source = tmp_path / "f.txt"
    source.write_text("hello")
    result = flywheel("store", "put", str(source), env=s3_env)
    assert result.returncode == 1
    assert "FLYWHEEL_S3_ENDPOINT_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_reports_a_broken_store_and_exits_nonzero(
    s3_env: dict[str, str],
) -> None:
    s3_env["FLYWHEEL_STORE_URI"] = "s3://no-such-bucket-here/objects"
    s3_env["COLUMNS"] = "250"
    result = flywheel("doctor", env=s3_env)
    assert result.returncode == 1
    assert "object store" in result.stderr + result.stdout
    assert "no-such-bucket-here" in result.stdout
    flywheel("db", "stop", env=s3_env)
