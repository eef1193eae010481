"""PostgreSQL binary values built and read with numpy, without a Python object per row.

Only fixed-width, non-null fields (``int4``, ``timestamptz``, ``float8``, ``bool``) are used,
so every row has the same big-endian layout; ``timestamptz`` values are given and returned as
int64 unix microseconds.

- ``encode_rows`` writes ``COPY ... FROM STDIN (FORMAT BINARY)`` data: per row an int16 field
  count, then per field an int32 length and the value ("Binary Format" in the manual's COPY).
- ``aggregate_columns`` / ``decode_columns`` read columns as one ``bytea`` each, the
  ``string_agg`` of the values' binary send form. A query returns them as one row, where COPY
  output costs a Python call per row in psycopg (about 2 s per million rows). The aggregates
  of one SELECT (no ORDER BY or DISTINCT inside) are fed the same rows in the same order, so
  the i-th value of each column belongs to the same row.

For example::

    fields = {"id": "int4", "time": "timestamptz", "close": "float8", "is_final": "bool"}
    data = b"".join(encode_rows(fields, {"id": ids, "time": micros, ...}))  # COPY ... FROM STDIN
    cursor.execute(f"SELECT {aggregate_columns(fields)} FROM t", binary=True)
    decode_columns(cursor.fetchone(), fields)["close"]                     # float64 array
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + np.array([0, 0], dtype=">i4").tobytes()  # flags, header extension length
TRAILER = np.array([-1], dtype=">i2").tobytes()
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in unix microseconds

WIRE_TYPES = {"int4": ">i4", "timestamptz": ">i8", "float8": ">f8", "bool": "u1"}
NATIVE_TYPES = {"int4": np.int32, "timestamptz": np.int64, "float8": np.float64, "bool": bool}
SEND_FUNCTIONS = {
    "int4": "int4send",
    "timestamptz": "timestamptz_send",
    "float8": "float8send",
    "bool": "boolsend",
}


def row_dtype(fields: Mapping[str, str]) -> np.dtype:
    """The numpy layout of one binary COPY row with ``fields`` (name -> PostgreSQL type)."""
    layout: list[tuple[str, str]] = [("_fields", ">i2")]
    for name, kind in fields.items():
        layout += [(f"_{name}_len", ">i4"), (name, WIRE_TYPES[kind])]
    return np.dtype(layout)


def encode_rows(
    fields: Mapping[str, str], columns: Mapping[str, np.ndarray], chunk_rows: int = 100_000
) -> Iterator[bytes]:
    """Binary COPY data, in chunks of ``chunk_rows`` rows, of equally long ``columns``."""
    dtype = row_dtype(fields)
    n = len(next(iter(columns.values()))) if columns else 0
    yield HEADER
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        rows = np.empty(stop - start, dtype=dtype)
        rows["_fields"] = len(fields)
        for name, kind in fields.items():
            values = columns[name][start:stop]
            rows[f"_{name}_len"] = np.dtype(WIRE_TYPES[kind]).itemsize
            rows[name] = values - PG_EPOCH_US if kind == "timestamptz" else values
        yield rows.tobytes()
    yield TRAILER


def aggregate_columns(fields: Mapping[str, str]) -> str:
    """The SELECT list that aggregates each of ``fields`` into one bytea."""
    return ", ".join(
        f"string_agg({SEND_FUNCTIONS[kind]}({name}), ''::bytea)" for name, kind in fields.items()
    )


def decode_columns(
    values: Sequence[bytes | None], fields: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """The columns from the row of ``aggregate_columns(fields)`` (None values: no rows)."""
    columns = {}
    for data, (name, kind) in zip(values, fields.items(), strict=True):
        column = np.frombuffer(data or b"", dtype=WIRE_TYPES[kind]).astype(NATIVE_TYPES[kind])
        columns[name] = column + PG_EPOCH_US if kind == "timestamptz" else column
    if len({len(column) for column in columns.values()}) > 1:
        raise ValueError(f"aggregated columns {', '.join(fields)} differ in length")
    return columns
