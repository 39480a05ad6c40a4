"""What every real-dataset loader shares: the spec, file and hub access, images, the draw.

A loader turns a dataset into two *pools* of records: ``train`` (the dataset's training
split) and ``eval`` (its validation/test split). :func:`assemble_task` draws the three split
roles from them with one seed: ``train`` queries and the ``support`` pool (demonstrations)
from the training pool, disjoint; ``eval`` from the evaluation pool. Records are built
lazily while drawing, so a bad record (missing image, malformed entry) is skipped and
counted, or reported, only when the draw reaches it; with a size of ``None`` every record is
examined.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from mimic.errors import MimicError
from mimic.data.loaders.question_ids import QuestionIds, canonical_id
from mimic.data.schema import COLUMNS, image_record, write_json, write_table

log = logging.getLogger(__name__)

POOLS = ("train", "eval")
SOURCES = ("hub", "files")
BAD_SAMPLE_POLICIES = ("skip", "fail")
SPEC_KEYS: dict[str, str] = {
    "name": "task name; the tables go to data/<name>/",
    "loader": "which loader reads the data (default: the task name)",
    "kind": "vqa | caption; checked against the loader",
    "source": "hub | files, or per pool {train: hub|files, eval: hub|files}",
    "hub_id": "hub dataset id or a local directory of hub-layout parquet files, or per pool {train: ..., eval: ...}",
    "hub_config": "hub config (subset) name (default: none)",
    "hub_revision": "hub revision (default: main)",
    "hub_splits": "{train: split, eval: split}; a value may be a list of splits, concatenated",
    "hub_cache_dir": "cache directory for datasets.load_dataset (default: the datasets cache)",
    "files": "local files and image directories (keys depend on the loader)",
    "n_train": "training queries, drawn from the training split (null: all not used by support)",
    "n_support": "demonstration pool, drawn from the training split, disjoint from train (null: the rest)",
    "n_eval": "evaluation queries, drawn from the validation/test split (null: all)",
    "on_bad_sample": "skip | fail: drop and count a bad record, or stop with an error (default: fail)",
    "verify_images": "open every selected image to check it is readable (default: true)",
    "embed_images": "store image bytes in the tables instead of paths (default: false)",
}

RowBuilder = Callable[[Any], dict]


class DataError(MimicError, RuntimeError):
    """The data cannot make the requested task: a bad record, too few records, overlapping splits (an expected
    failure: `mimic prepare` ends with its one line)."""


class BadSample(Exception):
    """Raised by a record builder: ``category`` is counted, ``detail`` is logged."""

    def __init__(self, category: str, detail: str):
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail


def text_list(value: Any, key: str, what: str, empty: str, strip_blank: bool = False) -> list[str]:
    """Strings from ``[{key: ...}]``, ``["..."]``, ``{key: [...]}`` or one string (answers, captions).

    ``strip_blank`` strips each text and drops blank ones; ``empty`` names the bad-sample
    category of a record left with none.
    """
    if isinstance(value, Mapping) and isinstance(value.get(key), list | str):
        value = value[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise BadSample("malformed record", f"{what}: {type(value).__name__}, not a list")
    texts = []
    for item in value:
        text = item.get(key) if isinstance(item, Mapping) else item
        if not isinstance(text, str):
            raise BadSample("malformed record", f"{what}: entry {item!r} has no text")
        if strip_blank:
            text = text.strip()
            if not text:
                continue
        texts.append(text)
    if not texts:
        raise BadSample(empty, f"{what}: none")
    return texts


@dataclass(frozen=True)
class TaskSpec:
    """A validated task spec; per-pool values are dicts keyed by ``train``/``eval``."""

    name: str
    loader: str
    kind: str
    title: str
    source: dict[str, str]
    hub_id: dict[str, str | None]
    hub_splits: dict[str, tuple[str, ...]]
    hub_config: str | None
    hub_revision: str | None
    hub_cache_dir: str | None
    files: dict[str, str]
    n_train: int | None
    n_support: int | None
    n_eval: int | None
    on_bad_sample: str
    verify_images: bool
    embed_images: bool
    options: dict[str, Any] = field(default_factory=dict)

    def key(self, *parts: str) -> str:
        """The params.yaml path of a setting, for messages: ``tasks.<name>.<parts>``."""
        return ".".join(("tasks", self.name, *parts))

    def path(self, key: str, what: str, hint: str, *, directory: bool = False) -> Path:
        """``files[key]`` as an existing path, or an error naming the setting and where to get the data."""
        setting = self.key("files", key)
        if key not in self.files:
            raise ValueError(f"{self.title}: {setting} is required ({what}); {hint}")
        path = Path(self.files[key]).expanduser()
        exists = path.is_dir() if directory else path.is_file()
        if not exists:
            kind = "directory" if directory else "file"
            raise FileNotFoundError(
                f"{self.title}: {what} {kind} {path} not found; set {setting} in params.yaml or {hint}"
            )
        return path

    def optional_path(self, key: str, what: str, hint: str, *, directory: bool = False) -> Path | None:
        return self.path(key, what, hint, directory=directory) if key in self.files else None


def validate_spec(
    spec: Mapping[str, Any],
    *,
    loader: str,
    kind: str,
    title: str,
    files_keys: Sequence[str],
    default_hub_splits: Mapping[str, str],
    option_keys: Mapping[str, Any] | None = None,
) -> TaskSpec:
    """Check ``spec`` before any heavy work; a one-line ``ValueError`` names the bad key and the valid options.

    ``option_keys`` maps each loader-specific key to its default.
    """
    option_keys = dict(option_keys or {})
    if not isinstance(spec, Mapping):
        raise ValueError(f"{title}: a task spec must be a mapping, got {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{title}: the task spec needs a non-empty string 'name'")
    unknown = sorted(set(spec) - set(SPEC_KEYS) - set(option_keys))
    if unknown:
        valid = sorted(set(SPEC_KEYS) | set(option_keys))
        raise ValueError(f"{title}: unknown key tasks.{name}.{unknown[0]}; valid keys are {valid}")

    def where(*parts: str) -> str:
        return ".".join(("tasks", name, *parts))

    if spec.get("kind", kind) != kind:
        raise ValueError(f"{title}: {where('kind')} is {spec['kind']!r} but the {loader} loader makes {kind!r} tasks")
    source = _per_pool(spec.get("source"), where("source"), "hub")
    for pool, value in source.items():
        if value not in SOURCES:
            raise ValueError(f"{title}: {where('source')} for {pool} is {value!r}; valid options are {list(SOURCES)}")
    hub_id = _per_pool(spec.get("hub_id"), where("hub_id"), None)
    for pool in POOLS:
        if source[pool] == "hub" and not isinstance(hub_id[pool], str):
            raise ValueError(f"{title}: {where('hub_id')} (a string) is required for the {pool} pool with source: hub")
    raw_splits = spec.get("hub_splits") or {}
    if not isinstance(raw_splits, Mapping) or set(raw_splits) - set(POOLS):
        raise ValueError(f"{title}: {where('hub_splits')} must be a mapping with keys {list(POOLS)}")
    hub_splits = {}
    for pool in POOLS:
        value = raw_splits.get(pool, default_hub_splits[pool])
        value = (value,) if isinstance(value, str) else tuple(value)
        if not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{title}: {where('hub_splits', pool)} must be a split name or a list of split names")
        hub_splits[pool] = value
    files = spec.get("files") or {}
    if not isinstance(files, Mapping):
        raise ValueError(f"{title}: {where('files')} must be a mapping of {list(files_keys)}")
    bad_files = sorted(set(files) - set(files_keys))
    if bad_files:
        raise ValueError(f"{title}: unknown key {where('files', bad_files[0])}; valid keys are {list(files_keys)}")
    sizes = {key: _size(spec.get(key), where(key), title) for key in ("n_train", "n_support", "n_eval")}
    if sizes["n_train"] is None and sizes["n_support"] is None:
        raise ValueError(
            f"{title}: {where('n_train')} and {where('n_support')} cannot both be null: "
            "train and support share the training split; give at least one of them a number"
        )
    policy = spec.get("on_bad_sample", "fail")
    if policy not in BAD_SAMPLE_POLICIES:
        valid = list(BAD_SAMPLE_POLICIES)
        raise ValueError(f"{title}: {where('on_bad_sample')} is {policy!r}; valid options are {valid}")
    flags = {}
    for key, default in (("verify_images", True), ("embed_images", False)):
        flags[key] = spec.get(key, default)
        if not isinstance(flags[key], bool):
            raise ValueError(f"{title}: {where(key)} must be true or false, got {flags[key]!r}")
    for key in ("hub_config", "hub_revision", "hub_cache_dir"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ValueError(f"{title}: {where(key)} must be a string")
    return TaskSpec(
        name=name,
        loader=loader,
        kind=kind,
        title=title,
        source=source,
        hub_id=hub_id,
        hub_splits=hub_splits,
        hub_config=spec.get("hub_config"),
        hub_revision=spec.get("hub_revision"),
        hub_cache_dir=spec.get("hub_cache_dir"),
        files={k: str(v) for k, v in files.items() if v is not None},  # null = not given
        options={key: spec.get(key, default) for key, default in option_keys.items()},
        on_bad_sample=policy,
        **sizes,
        **flags,
    )


def _per_pool(value: Any, where: str, default: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        extra = sorted(set(value) - set(POOLS))
        if extra:
            raise ValueError(f"{where} has an unknown pool {extra[0]!r}; valid pools are {list(POOLS)}")
        return {pool: value.get(pool, default) for pool in POOLS}
    return dict.fromkeys(POOLS, default if value is None else value)


def _size(value: Any, where: str, title: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{title}: {where} must be a non-negative integer or null (all), got {value!r}")
    return value


# ----------------------------------------------------------------------------- files


def read_json(path: Path, title: str, what: str, top_key: str) -> list:
    """``json.load(path)[top_key]`` as a list, with errors that name the file."""
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{title}: {what} file {path} is not valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get(top_key), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{title}: {what} file {path} has no {top_key!r} list (found {found})")
    return data[top_key]


_COCO_FILE = re.compile(r"^(?:COCO_[A-Za-z]+\d*_)?(\d{12})\.(?:jpe?g|png)$", re.IGNORECASE)


def index_coco_images(directory: Path, title: str, setting: str) -> dict[int, Path]:
    """COCO image id -> file, for ``COCO_train2014_000000000009.jpg`` or ``000000000009.jpg`` names."""
    index: dict[int, Path] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _COCO_FILE.match(entry.name)
            if match:
                index.setdefault(int(match.group(1)), Path(entry.path))
    if not index:
        raise FileNotFoundError(
            f"{title}: no COCO images (COCO_val2014_000000000042.jpg or 000000000042.jpg) in {directory}; "
            f"set {setting} to the folder holding the .jpg files"
        )
    return index


# ----------------------------------------------------------------------------- hub


def hub_source(task: TaskSpec, pool: str, images_dir: Path | None = None) -> dict:
    """Where a hub pool came from, as meta.json records it (and a change of it is seen)."""
    source = {
        "type": "hub",
        "hub_id": task.hub_id[pool],
        "splits": list(task.hub_splits[pool]),
        "config": task.hub_config,
        "revision": task.hub_revision,
    }
    if images_dir is not None:
        source["images"] = str(images_dir.resolve())
    return source


def load_hub_split(task: TaskSpec, pool: str, hint: str):
    """The pool's hub split(s) as one ``datasets.Dataset``, image columns left undecoded.

    ``hint`` completes "or use source: files with ..." in error messages.
    """
    import datasets

    hub_id = task.hub_id[pool]
    parts = []
    for split in task.hub_splits[pool]:
        try:
            ds = datasets.load_dataset(
                hub_id,
                name=task.hub_config,
                split=split,
                revision=task.hub_revision,
                cache_dir=task.hub_cache_dir,
            )
        except Exception as err:  # datasets raises many types; all end here with one message
            raise DataError(_hub_error(task, pool, split, err, hint)) from err
        for column, feature in ds.features.items():
            if isinstance(feature, datasets.Image) and feature.decode:
                ds = ds.cast_column(column, datasets.Image(decode=False))
        parts.append(ds)
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _hub_error(task: TaskSpec, pool: str, split: str, err: Exception, hint: str) -> str:
    import datasets

    hub_id = task.hub_id[pool]
    text = f"{type(err).__name__}: {err}"
    if "scripts are no longer supported" in str(err):
        return (
            f"{task.title}: {hub_id!r} is a loading-script dataset, which datasets>=4 (installed: "
            f"{datasets.__version__}) cannot load ({text}); set {task.key('hub_id')} to a parquet repository "
            f"or a local directory of its parquet files, or use source: files with {hint}"
        )
    if "Unknown split" in str(err) or "Bad split" in str(err):
        return f"{task.title}: {hub_id!r} has no split {split!r} ({text}); set {task.key('hub_splits', pool)}"
    return (
        f"{task.title}: could not load {hub_id!r} split {split!r} from the hub ({text}); check the id, the network "
        f"and HF_HUB_OFFLINE, or download the parquet files and set {task.key('hub_id')} to their local directory, "
        f"or use source: files with {hint}"
    )


def first_column(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def require_columns(task: TaskSpec, pool: str, columns: Sequence[str], needed: Mapping[str, Sequence[str]]) -> dict:
    """Pick one column per role from ``needed`` (role -> candidate names); a clear error when one is absent."""
    picked = {role: first_column(columns, names) for role, names in needed.items()}
    missing = [role for role, column in picked.items() if column is None]
    if missing:
        wanted = "; ".join(f"{role}: one of {list(needed[role])}" for role in missing)
        raise DataError(
            f"{task.title}: the {pool} hub data {task.hub_id[pool]!r} lacks columns for {wanted}; "
            f"its columns are {list(columns)}"
        )
    return picked


# ----------------------------------------------------------------------------- images


def check_image(source, what: str) -> None:
    """``BadSample`` unless ``source`` (a path or a binary file object) holds a readable image."""
    try:
        with Image.open(source) as img:
            img.verify()
    except FileNotFoundError as err:
        raise BadSample("missing image", f"{what} not found") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadSample("unreadable image", f"{what}: {err}") from err


def image_from_file(path: Path, task: TaskSpec) -> dict:
    """The image record of a local file: its absolute path (and its bytes with ``embed_images``)."""
    if not path.is_file():
        raise BadSample("missing image", f"image file {path} not found")
    if task.verify_images:
        check_image(path, f"image file {path}")
    return image_record(data=path.read_bytes() if task.embed_images else None, path=str(path.resolve()))


def image_from_value(value: Any, task: TaskSpec, root: Path | None = None) -> dict:
    """The image record of a hub cell: ``{bytes, path}`` dict, raw bytes or a path (relative to ``root``)."""
    import io

    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, bytes | bytearray):
        data, path = bytes(value), None
    elif isinstance(value, str):
        data, path = None, value
    elif value is None:
        raise BadSample("missing image", "the image cell is empty")
    else:
        raise BadSample("malformed record", f"unrecognised image value of type {type(value).__name__}")
    if data:
        if task.verify_images:
            check_image(io.BytesIO(data), "image bytes")
        return image_record(data=bytes(data), path=path)
    if path:
        file = Path(path)
        if not file.is_absolute() and root is not None:
            file = root / file
        return image_from_file(file, task)
    raise BadSample("missing image", "the image cell has neither bytes nor a path")


# ----------------------------------------------------------------------------- the draw


@dataclass
class Pool:
    """The records of one split and how to turn one into a table row (raising ``BadSample``)."""

    records: Sequence
    build: RowBuilder
    source: dict  # what the pool was read from, for meta.json
    label: str  # e.g. "VQAv2 train split", for messages
    ids: Callable[[], Sequence[Any]] | None = None  # each record's raw id, read without building it


class _Draw:
    """Walks one pool in a fixed order, building rows and accounting for bad records."""

    def __init__(self, task: TaskSpec, pool: Pool, order: Iterator[int]):
        self.task, self.pool, self.order = task, pool, order
        self.seen: set[str] = set()

    def take(self, role: str, n: int | None) -> tuple[list[dict], Counter]:
        rows: list[dict] = []
        skipped: Counter = Counter()
        examples: list[str] = []
        while n is None or len(rows) < n:
            index = next(self.order, None)
            if index is None:
                break
            try:
                row = self.pool.build(self.pool.records[int(index)])
                if row["id"] in self.seen:
                    raise BadSample("duplicate id", f"id {row['id']!r} appears more than once")
            except BadSample as bad:
                if self.task.on_bad_sample == "fail":
                    raise DataError(
                        f"{self.task.title}: bad record #{index} in the {self.pool.label}: {bad}; fix the data or set "
                        f"{self.task.key('on_bad_sample')}: skip to drop such records"
                    ) from None
                skipped[bad.category] += 1
                if len(examples) < 3:
                    examples.append(f"#{index}: {bad}")
                continue
            self.seen.add(row["id"])
            rows.append(row)
        if n is not None and len(rows) < n:
            raise DataError(
                f"{self.task.title}: {self.task.key('n_' + role)} asks for {n} records but the {self.pool.label} "
                f"has only {len(rows)} usable ones left ({sum(skipped.values())} skipped); lower it or set it to null"
            )
        if skipped:
            total = sum(skipped.values())
            title = self.task.title
            log.warning("%s %s: skipped %d bad records %s, e.g. %s", title, role, total, dict(skipped), examples)
        return rows, skipped


def assemble_task(
    task: TaskSpec, pools: Mapping[str, Pool], out_dir: Path, seed: int, eval_ids: QuestionIds | None = None
) -> dict:
    """Draw train/support/eval, write ``out_dir/{train,support,eval}.parquet`` and ``meta.json``; return meta.

    The training pool is shuffled with ``seed``; the role with a fixed size is drawn first
    (train when both are fixed, so the training queries depend only on ``seed`` and
    ``n_train``) and the other takes what follows, so the two are disjoint. ``eval`` is a
    seeded subsample of the evaluation pool, or all of it in source order when ``n_eval`` is null.

    With ``eval_ids`` (``question_ids:``), ``eval`` is those questions in their listed order
    instead: all of them when ``n_eval`` is null, else the first ``n_eval`` usable ones. Ids
    absent from the evaluation pool stop with an error naming how many and one of them, or,
    with ``on_bad_sample: skip``, are counted as ``"not in source"`` like other bad records.
    """
    train_pool, eval_pool = pools["train"], pools["eval"]
    if train_pool.source == eval_pool.source:
        raise DataError(
            f"{task.title}: the training and evaluation pools are the same data ({train_pool.source}); evaluation must "
            f"come from a different split than train/support: check {task.key('hub_splits')} and {task.key('files')}"
        )
    train_order = iter(np.random.default_rng([seed, 0]).permutation(len(train_pool.records)))
    draw = _Draw(task, train_pool, train_order)
    tables, skipped = {}, {}
    first, second = ("train", "support") if task.n_train is not None else ("support", "train")
    for role in (first, second):
        tables[role], skipped[role] = draw.take(role, getattr(task, f"n_{role}"))
    if eval_ids is None:
        n_eval_pool = len(eval_pool.records)
        eval_rng = np.random.default_rng([seed, 1])
        eval_order = range(n_eval_pool) if task.n_eval is None else eval_rng.permutation(n_eval_pool)
        tables["eval"], skipped["eval"] = _Draw(task, eval_pool, iter(eval_order)).take("eval", task.n_eval)
    else:
        eval_order, not_found = _listed_positions(task, eval_pool, eval_ids)
        listed = replace(eval_pool, label=f"{eval_pool.label} restricted to {task.key('question_ids')}")
        tables["eval"], skipped["eval"] = _Draw(task, listed, iter(eval_order)).take("eval", task.n_eval)
        if not_found:
            skipped["eval"]["not in source"] += not_found

    shared = draw.seen & {row["id"] for row in tables["eval"]}  # splits that overlap under different names
    if shared:
        raise DataError(
            f"{task.title}: the training and evaluation splits share ids (e.g. {sorted(shared)[:3]}); "
            f"evaluation must come from a different split than train/support: check {task.key('hub_splits')} "
            f"and {task.key('files')}"
        )
    out_dir = Path(out_dir)
    for role in ("train", "support", "eval"):
        write_table(rows_to_frame(tables[role]), out_dir / f"{role}.parquet")
    meta = {
        "task": task.name,
        "kind": task.kind,
        "loader": task.loader,
        "seed": seed,
        "source": {pool: pools[pool].source for pool in POOLS},
        "pool_sizes": {pool: len(pools[pool].records) for pool in POOLS},
        "requested": {"n_train": task.n_train, "n_support": task.n_support, "n_eval": task.n_eval},
        **({"eval_question_ids": eval_ids.meta()} if eval_ids is not None else {}),
        "sizes": {role: len(tables[role]) for role in ("train", "support", "eval")},
        "on_bad_sample": task.on_bad_sample,
        "skipped": {role: dict(skipped[role]) for role in ("train", "support", "eval")},
        "skipped_total": sum(sum(c.values()) for c in skipped.values()),
    }
    write_json(out_dir / "meta.json", meta)
    log.info("%s: wrote %s to %s (skipped %d)", task.title, meta["sizes"], out_dir, meta["skipped_total"])
    return meta


def _listed_positions(task: TaskSpec, pool: Pool, eval_ids: QuestionIds) -> tuple[list[int], int]:
    """Positions in ``pool`` of the listed ids, in list order, and how many ids it lacks (``skip``)."""
    if pool.ids is None:
        raise ValueError(f"{task.title}: the {pool.label} cannot be restricted to {task.key('question_ids')}")
    index: dict[str, int] = {}
    for position, raw in enumerate(pool.ids()):
        if raw is not None:
            index.setdefault(canonical_id(raw), position)
    missing = [qid for qid in eval_ids.ids if qid not in index]
    if missing:
        setting = f"{task.key('question_ids')} ({eval_ids.source})"
        what = f"{len(missing)} of the {len(eval_ids.ids)} question ids of {setting}"
        if task.on_bad_sample == "fail":
            raise DataError(
                f"{task.title}: {what} are not in the {pool.label}, e.g. {missing[0]}; check the ids, "
                f"{task.key('hub_splits', 'eval')} and {task.key('files')}, or set {task.key('on_bad_sample')}: skip "
                "to leave them out"
            )
        log.warning("%s eval: %s are not in the %s (skipped), e.g. %s", task.title, what, pool.label, missing[:3])
    return [index[qid] for qid in eval_ids.ids if qid in index], len(missing)


INT_COLUMNS = ("image_id",)


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a normalized table: the schema columns first, then extras in first-seen order."""
    extras = [key for key in dict.fromkeys(k for row in rows for k in row) if key not in COLUMNS]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *extras])
    for column in INT_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame
