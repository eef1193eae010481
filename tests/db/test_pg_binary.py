"""The numpy codec of PostgreSQL binary values (the round trips through a server are in
test_upsert and test_load)."""

from __future__ import annotations

import numpy as np
import pytest

from db.pg_binary import HEADER, PG_EPOCH_US, TRAILER, decode_columns, encode_rows

FIELDS = {"id": "int4", "time": "timestamptz", "close": "float8", "is_final": "bool"}


def test_encode_rows_writes_the_binary_copy_layout():
    columns = {
        "id": np.array([7, 8], dtype=np.int32),
        "time": np.array([PG_EPOCH_US, PG_EPOCH_US + 60_000_000]),
        "close": np.array([1.5, -2.25]),
        "is_final": np.array([True, False]),
    }

    data = b"".join(encode_rows(FIELDS, columns, chunk_rows=1))

    assert data.startswith(HEADER) and data.endswith(TRAILER)
    first_row = (
        (4).to_bytes(2, "big")
        + (4).to_bytes(4, "big") + (7).to_bytes(4, "big")
        + (8).to_bytes(4, "big") + (0).to_bytes(8, "big")  # 2000-01-01 is PostgreSQL's zero
        + (8).to_bytes(4, "big") + np.array([1.5], dtype=">f8").tobytes()
        + (1).to_bytes(4, "big") + b"\x01"
    )  # fmt: skip
    assert data[len(HEADER) : len(HEADER) + len(first_row)] == first_row
    assert len(data) == len(HEADER) + 2 * len(first_row) + len(TRAILER)


def test_decode_columns_reads_aggregated_send_values():
    values = [
        np.array([1, 2], dtype=">i4").tobytes(),
        np.array([0, 1_000_000], dtype=">i8").tobytes(),
        np.array([3.0, 4.5], dtype=">f8").tobytes(),
        b"\x00\x01",
    ]

    columns = decode_columns(values, FIELDS)

    assert columns["id"].tolist() == [1, 2]
    assert columns["time"].tolist() == [PG_EPOCH_US, PG_EPOCH_US + 1_000_000]
    assert columns["close"].dtype == np.float64 and columns["close"].tolist() == [3.0, 4.5]
    assert columns["is_final"].tolist() == [False, True]
    assert all(len(column) == 0 for column in decode_columns([None] * 4, FIELDS).values())


def test_decode_columns_refuses_columns_of_different_lengths():
    values = [b"\x00\x00\x00\x01", b"", b"", b""]
    with pytest.raises(ValueError, match="differ in length"):
        decode_columns(values, FIELDS)
