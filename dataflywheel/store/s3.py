"""The object store on S3 or an S3-compatible server (MinIO, Ceph RGW) through boto3.

Runs in: anywhere with network access to the endpoint (CLI, Prefect tasks, Ray workers).
Objects live at ``s3://<bucket>/<prefix>/sha256/ab/<digest>``. S3 never exposes a partial
object: small files go up in one ``PutObject`` carrying their sha256, so the server rejects
damaged bodies; large files go up as a multipart upload that is completed only after the
bytes sent were hashed to the expected digest, and aborted on any failure.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from dataflywheel.store import tree
from dataflywheel.store.api import ObjectInfo, ObjectNotFoundError, ObjectRef, StoreError
from dataflywheel.store.fsio import (
    check_digest,
    hash_source,
    open_source,
    read_chunks,
    source_changed,
    write_verified,
)
from dataflywheel.store.keys import (
    CHUNK_SIZE,
    PROBE_BYTES,
    digest_of_bytes,
    digest_of_key,
    is_key,
    key_for_digest,
    normalize_key,
)

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PARTS = 10_000  # S3's ceiling; the part size grows for files beyond parts * part_size
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_REGION_CODES = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "301",
}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
_CREDENTIAL_FIX = (
    "Check FLYWHEEL_S3_ACCESS_KEY_ID and FLYWHEEL_S3_SECRET_ACCESS_KEY (unset both to use "
    "boto3's default credential chain: AWS_PROFILE, ~/.aws/credentials, an instance role)."
)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")``."""
    rest = uri.strip()[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket or any(c in bucket for c in " \\?#"):
        raise StoreError(
            f"FLYWHEEL_STORE_URI={uri!r} names no valid bucket: use s3://<bucket>/<prefix>, "
            "e.g. s3://flywheel/objects"
        )
    return bucket, prefix.strip("/")


class S3Store:
    """Content-addressed objects under ``s3://bucket/prefix``."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold: int = 16 * MiB,
        part_size: int = 8 * MiB,
        max_concurrency: int = 4,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if bool(access_key_id) != bool(secret_access_key):
            raise StoreError(
                "set both FLYWHEEL_S3_ACCESS_KEY_ID and FLYWHEEL_S3_SECRET_ACCESS_KEY, or "
                "neither (to use boto3's default credential chain)"
            )
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.multipart_threshold = max(multipart_threshold, 1)
        self.part_size = part_size
        self.max_concurrency = max(max_concurrency, 1)
        self._credentials = (access_key_id or None, secret_access_key or None)
        self._client_options = {
            "max_attempts": max_attempts,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
        }
        self._client = self._make_client()

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint_url={self.endpoint_url!r})"

    # Ray and multiprocessing pickle what they ship; a boto3 client does not pickle, so it is
    # rebuilt on the other side from the same settings.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_client"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = self._make_client()

    def _make_client(self) -> Any:
        opts = self._client_options
        config = Config(
            connect_timeout=opts["connect_timeout"],
            read_timeout=opts["read_timeout"],
            retries={"max_attempts": opts["max_attempts"], "mode": "standard"},
            # put_tree moves several files at once, each in up to max_concurrency parts.
            max_pool_connections=tree.MAX_WORKERS * self.max_concurrency + 2,
            # MinIO and most S3-compatible servers only route path-style requests.
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        key_id, secret = self._credentials
        try:
            session = boto3.session.Session(
                aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=self.region
            )
            return session.client("s3", endpoint_url=self.endpoint_url, config=config)
        except BotoCoreError as exc:  # e.g. AWS_PROFILE naming a profile that does not exist
            raise StoreError(f"cannot configure the S3 client: {exc}. {_CREDENTIAL_FIX}") from exc
        except ValueError as exc:
            raise StoreError(
                f"FLYWHEEL_S3_ENDPOINT_URL={self.endpoint_url!r} is not a valid URL ({exc}); "
                "use e.g. http://localhost:9000"
            ) from exc

    # --- writes ---------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> ObjectRef:
        digest = digest_of_bytes(data)
        ref = ObjectRef(key_for_digest(digest), digest, len(data))
        with self._errors("put", ref.key):
            if not self._has(ref.key, ref.size, before_put=True):
                self._put_object(ref.key, data, digest)
        return ref

    def put_file(self, path: Path) -> ObjectRef:
        path = Path(path)
        # First pass: the digest names the object, and an object already stored is skipped
        # after one HEAD. The upload pass hashes again, so a file that changed in between is
        # never stored under the wrong name.
        digest, size = hash_source(path)
        ref = ObjectRef(key_for_digest(digest), digest, size)
        with self._errors("put", ref.key):
            if self._has(ref.key, size, before_put=True):
                return ref
            if size < self.multipart_threshold:
                with open_source(path) as f:
                    data = f.read()
                if digest_of_bytes(data) != digest:
                    raise source_changed(path)
                self._put_object(ref.key, data, digest)
            else:
                self._put_multipart(path, ref)
        return ref

    def _put_object(self, key: str, data: bytes, digest: str) -> None:
        self._client.put_object(
            Bucket=self.bucket,
            Key=self._object_key(key),
            Body=data,
            # The server recomputes it and refuses a body damaged in transit.
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
        )

    def _put_multipart(self, path: Path, ref: ObjectRef) -> None:
        object_key = self._object_key(ref.key)
        part_size = max(self.part_size, math.ceil(ref.size / MAX_PARTS))
        upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=object_key)[
            "UploadId"
        ]
        try:
            h = hashlib.sha256()
            futures: list[Future[dict[str, Any]]] = []
            pending: set[Future[dict[str, Any]]] = set()
            # Parts are read (and hashed) in order here and uploaded by a few threads; at
            # most max_concurrency parts are in memory at once.
            with open_source(path) as f, ThreadPoolExecutor(self.max_concurrency) as pool:
                for number, chunk in enumerate(read_chunks(f, part_size), start=1):
                    h.update(chunk)
                    fut = pool.submit(self._upload_part, object_key, upload_id, number, chunk)
                    futures.append(fut)
                    pending.add(fut)
                    if len(pending) >= self.max_concurrency:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for finished in done:
                            finished.result()  # a failed part stops the upload now
                parts = [fut.result() for fut in futures]
            if h.hexdigest() != ref.digest:
                raise source_changed(path)
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Until completed, a multipart upload is invisible; aborting frees its parts.
            with suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id
                )
            raise

    def _upload_part(self, object_key: str, upload_id: str, number: int, body: bytes) -> dict:
        resp = self._client.upload_part(
            Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def check(self) -> None:
        probe = key_for_digest(digest_of_bytes(PROBE_BYTES))
        with self._errors("check", None):
            # A listing first: its errors (NoSuchBucket, InvalidAccessKeyId...) have codes,
            # unlike HEAD's bare 404/403.
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._base, MaxKeys=1)
            # Written unconditionally: an existing probe must not hide a read-only bucket.
            self._put_object(probe, PROBE_BYTES, digest_of_key(probe))
        self.get_bytes(probe)

    # --- reads ----------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        key = normalize_key(key)
        with self._errors("get", key):
            resp = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            with closing(resp["Body"]) as body:
                data: bytes = body.read()
        check_digest(digest_of_bytes(data), digest_of_key(key), key, self.uri)
        return data

    def get_file(self, key: str, dest: Path) -> Path:
        key = normalize_key(key)
        dest = Path(dest)
        with self._errors("get", key):
            resp = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            with closing(resp["Body"]) as body:
                try:
                    return write_verified(body.iter_chunks(CHUNK_SIZE), dest, key, self.uri)
                except OSError as exc:
                    raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        key = normalize_key(key)
        with self._errors("exists", key):
            return self._has(key, None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("list", None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base + prefix):
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self._base) :]
                    if is_key(key):
                        yield ObjectInfo(key, int(obj["Size"]))

    # --- trees ----------------------------------------------------------------------------

    def put_tree(self, root: Path) -> ObjectRef:
        return tree.put_tree(self, Path(root))

    def get_tree(self, manifest_key: str, dest: Path) -> Path:
        return tree.get_tree(self, manifest_key, Path(dest))

    # --- helpers --------------------------------------------------------------------------

    @property
    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _object_key(self, key: str) -> str:
        return self._base + key

    def _has(self, key: str, size: int | None, *, before_put: bool = False) -> bool:
        """Whether the object is stored (with ``size`` bytes, when given).

        Before a put, a 403 counts as absent: without s3:ListBucket S3 answers 403 for a
        missing key, and uploading identical bytes again is harmless. Bad credentials then
        fail on the PUT itself, with an error code that names the problem.
        """
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING_KEY_CODES or (before_put and code in _DENIED_CODES):
                return False
            raise
        return size is None or int(head["ContentLength"]) == size

    @contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        """Turn botocore's exceptions into one :class:`StoreError` that says what to fix."""
        try:
            yield
        except StoreError:
            raise
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, action, key) from exc

    def _translate(self, exc: Exception, action: str, key: str | None) -> StoreError:
        endpoint = self.endpoint_url or "AWS S3"
        bucket = self.bucket
        target = f"{self.uri}/{key}" if key else self.uri
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return StoreError(
                f"cannot reach S3 at {endpoint} ({exc}). Check FLYWHEEL_S3_ENDPOINT_URL "
                "(e.g. http://localhost:9000 for MinIO) and that the server is running and "
                "reachable from this machine."
            )
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StoreError(f"no S3 credentials found for {self.uri}. {_CREDENTIAL_FIX}")
        if not isinstance(exc, ClientError):
            return StoreError(f"S3 {action} of {target} failed: {exc}")
        code = _code(exc)
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        if code == "NoSuchBucket" or (key is None and status == 404):
            return StoreError(
                f"S3 bucket {bucket!r} does not exist at {endpoint}. Create it (`aws s3 mb "
                f"s3://{bucket}`, or `mc mb` / the console for MinIO) or set "
                "FLYWHEEL_STORE_URI to s3://<an existing bucket>/<prefix>."
            )
        if code in _MISSING_KEY_CODES and key:
            return ObjectNotFoundError(f"no object {key} in {self.uri}")
        if code in _CREDENTIAL_CODES:
            return StoreError(
                f"S3 at {endpoint} rejected the credentials ({code}: {message}) for bucket "
                f"{bucket!r}. {_CREDENTIAL_FIX}"
            )
        if code in _DENIED_CODES or status == 403:
            return StoreError(
                f"S3 at {endpoint} denied {action} on {target} ({code}). Either the "
                "credentials are wrong or they lack s3:ListBucket on the bucket and "
                f"s3:GetObject / s3:PutObject under the prefix. {_CREDENTIAL_FIX}"
            )
        if code in _REGION_CODES or status == 301:
            actual = meta.get("HTTPHeaders", {}).get("x-amz-bucket-region", "another region")
            return StoreError(
                f"S3 bucket {bucket!r} is in {actual}, not {self.region or 'the default'}: "
                f"set FLYWHEEL_S3_REGION={actual if actual != 'another region' else '<it>'}."
            )
        if code == "InvalidBucketName":
            return StoreError(
                f"{bucket!r} is not a valid S3 bucket name: fix FLYWHEEL_STORE_URI "
                "(s3://<bucket>/<prefix>)."
            )
        return StoreError(f"S3 {action} of {target} failed ({code}): {message}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
