"""Writing record batches as one Parquet file, a row group at a time: to a path, or as the
chunks of an HTTP response.

Runs in: anywhere (local files only). Batches are gathered until a row group's worth is
pending, then written out and dropped, so memory holds at most one row group plus one batch
whatever the number of rows. Columns are zstd-compressed and dictionary-encoded (a prompt
repeated for each of its samples costs little). For streaming, the writer's sink is a buffer
drained after every row group: Parquet writes strictly forward (the footer comes last), so
the file needs no seeking and the first bytes leave before the last row is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 50_000
COMPRESSION = "zstd"


class _Drain:
    """A write-only file object whose bytes are taken out as they come (``take``)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


class RowGroupWriter:
    """Writes batches of ``schema`` to ``sink`` in row groups of ``row_group_rows`` rows."""

    def __init__(self, sink: str | Path | _Drain, schema: pa.Schema, row_group_rows: int) -> None:
        if row_group_rows < 1:
            raise ValueError(f"row_group_rows must be at least 1 (got {row_group_rows})")
        self._writer = pq.ParquetWriter(
            sink if isinstance(sink, _Drain) else str(sink), schema, compression=COMPRESSION
        )
        self._schema = schema
        self._group = row_group_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> bool:
        """Queue ``batch``; True when full row groups were written out."""
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows < self._group:
            return False
        table = pa.Table.from_batches(self._pending, schema=self._schema)
        full = (self._pending_rows // self._group) * self._group
        self._writer.write_table(table.slice(0, full), row_group_size=self._group)
        rest = table.slice(full)
        self._pending = rest.combine_chunks().to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows
        return True

    def close(self) -> None:
        """Write the last, partial row group and the footer."""
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending, schema=self._schema))
            self._pending, self._pending_rows = [], 0
        self._writer.close()

    def abort(self) -> None:
        """Close the file without the pending rows (its owner deletes it)."""
        self._pending, self._pending_rows = [], 0
        self._writer.close()


def write_parquet(
    batches: Iterable[pa.RecordBatch],
    path: Path,
    schema: pa.Schema,
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> int:
    """Write ``batches`` to ``path``; returns the number of rows."""
    writer = RowGroupWriter(path, schema, row_group_rows)
    try:
        for batch in batches:
            writer.add(batch)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.rows


def parquet_chunks(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> Iterator[bytes]:
    """The bytes of the Parquet file of ``batches``, a row group at a time; the first chunk
    (the file's magic bytes) comes before any batch is read."""
    sink = _Drain()
    writer = RowGroupWriter(sink, schema, row_group_rows)
    yield sink.take()
    for batch in batches:
        if writer.add(batch):
            yield sink.take()
    writer.close()
    yield sink.take()
