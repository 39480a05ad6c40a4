"""The one normalized schema shared by every task, synthetic or real.

A prepared task is a directory ``data/<task>/`` holding one parquet table per split role:

- ``train.parquet``   training queries (MimIC's training set),
- ``support.parquet`` the demonstration pool (in-context examples are drawn from here),
- ``eval.parquet``    evaluation queries,

plus ``meta.json`` (task name, kind, source, sizes, skipped counts). Every table has the
columns below; ``image`` follows the Hugging Face ``datasets`` Image convention, a struct
``{"bytes": <encoded PNG/JPEG> | None, "path": <file path> | None}``, so hub parquet keeps
image bytes and local COCO copies keep paths.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
from PIL import Image

from mimic.io.atomic import atomic_write_bytes, atomic_write_text

SPLITS = ("train", "support", "eval")
KINDS = ("vqa", "caption", "yes-no", "multiple-choice")  # the last two: mimic.metrics.ROW_FIELDS
COLUMNS = {
    "id": "unique string id within the task",
    "image": "struct {bytes, path}: the encoded image or its file path",
    "question": "the question (VQA) or '' (captioning)",
    "answers": "list of strings: the human answers (VQA, usually 10) or reference captions",
}


def image_record(data: bytes | None = None, path: str | None = None) -> dict:
    if data is None and path is None:
        raise ValueError("an image record needs bytes or a path")
    return {"bytes": data, "path": path}


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def open_image(record: dict, root: str | os.PathLike | None = None) -> Image.Image:
    """Decode an image record to RGB; a relative path is resolved against ``root``."""
    if record.get("bytes") is not None:
        return Image.open(io.BytesIO(record["bytes"])).convert("RGB")
    path = Path(record["path"])
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} is missing")
    with Image.open(path) as img:
        return img.convert("RGB")


def validate_table(df: pd.DataFrame, name: str = "table") -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; the normalized schema is {list(COLUMNS)}")
    if df["id"].duplicated().any():
        dup = df.loc[df["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"{name}: duplicate id {dup!r}")


def arrow_schema(df: pd.DataFrame):
    """Explicit types for the normalized columns (extra columns keep pandas' inference)."""
    import pyarrow as pa

    fields = [
        pa.field("id", pa.string()),
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
        pa.field("question", pa.string()),
        pa.field("answers", pa.list_(pa.string())),
    ]
    extra = [c for c in df.columns if c not in COLUMNS]
    inferred = pa.Schema.from_pandas(df[extra], preserve_index=False) if extra else pa.schema([])
    return pa.schema(fields + [inferred.field(c) for c in extra])


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a normalized table as parquet (explicit column types), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    validate_table(df, str(path))
    ordered = df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]
    table = pa.Table.from_pandas(ordered, schema=arrow_schema(ordered), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `mimic prepare` for this task first")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors do not name the file
        from mimic.errors import IntegrityError

        raise IntegrityError(f"{path}: not a readable parquet table ({' '.join(str(exc).split())}); restore it "
                             f"(`dvc checkout --force {path}`) or prepare it again (`mimic prepare`)") from None
    validate_table(df, str(path))
    df["answers"] = df["answers"].map(list)
    return df


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
