"""The stored form of a fitted model: one zip with the ``.keras`` file, JSON metadata and
a sha256 checksum over both, verified on load.

>>> blob = pack(b"weights", {"kind": "LSTMForecaster"})
>>> unpack(blob, "LSTMForecaster")[0]
b'weights'
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

FORMAT = "cdd-forecast/lstm-artifact"
FORMAT_VERSION = 1
MODEL_MEMBER = "model.keras"
METADATA_MEMBER = "metadata.json"
CHECKSUM_MEMBER = "checksum.sha256"


class ArtifactError(ValueError):
    """A stored model that is corrupted, truncated or not what the caller expects."""


def checksum(model_bytes: bytes, metadata_bytes: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(model_bytes)
    digest.update(metadata_bytes)
    return digest.hexdigest()


def pack(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """Zip the Keras file and metadata (with the format tag) and their checksum."""
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    metadata_bytes = json.dumps(metadata, sort_keys=True, indent=1).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(MODEL_MEMBER, model_bytes)
        archive.writestr(METADATA_MEMBER, metadata_bytes)
        archive.writestr(CHECKSUM_MEMBER, checksum(model_bytes, metadata_bytes))
    return buffer.getvalue()


def unpack(blob: bytes, kind: str, source: str = "artifact") -> tuple[bytes, dict[str, Any]]:
    """``(keras_bytes, metadata)`` of a packed artifact; ArtifactError when it does not check."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise ArtifactError(f"{source}: expected bytes, got {type(blob).__name__}")
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(blob))) as archive:
            names = set(archive.namelist())
            missing = {MODEL_MEMBER, METADATA_MEMBER, CHECKSUM_MEMBER} - names
            if missing:
                raise ArtifactError(
                    f"{source} is not a forecaster artifact: missing {sorted(missing)}"
                )
            model_bytes = archive.read(MODEL_MEMBER)
            metadata_bytes = archive.read(METADATA_MEMBER)
            stored = archive.read(CHECKSUM_MEMBER).decode("ascii", "replace").strip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise ArtifactError(
            f"{source} is corrupted or not a forecaster artifact ({error}); "
            "retrain the model or restore the artifact"
        ) from error
    actual = checksum(model_bytes, metadata_bytes)
    if stored != actual:
        raise ArtifactError(
            f"{source} failed its checksum (stored {stored[:12]}…, computed {actual[:12]}…): "
            "the artifact is corrupted; retrain the model or restore the artifact"
        )
    try:
        metadata = json.loads(metadata_bytes)
    except ValueError as error:
        raise ArtifactError(f"{source}: metadata is not valid JSON ({error})") from error
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: format {metadata.get('format')!r} version "
            f"{metadata.get('format_version')!r} is not {FORMAT!r} version {FORMAT_VERSION}"
        )
    if metadata.get("kind") != kind:
        raise ArtifactError(f"{source} holds a {metadata.get('kind')!r}, not a {kind!r}")
    return model_bytes, metadata
