"""What each pipeline stage's results depend on, written where both Snakemake and DVC see it.

Every stage instance of the run (``prepare`` of a task, ``train`` of a model x task x method, ...)
has a *settings file*, ``results/settings/<stage>/<names...>.json``: the params.yaml values its
results depend on, and for a local model the content digest of the model's files. It is the one
rerun trigger both tools share:

- ``mimic validate`` (DVC's first stage; the Snakefile calls :func:`write_settings` when it is
  read) checks all of params.yaml and rewrites a settings file only when its content changes;
- every Snakemake rule and DVC stage takes its settings file as an input / dependency, so an edit
  reruns exactly the stages whose settings changed, under either tool (Snakemake by the file's
  mtime, DVC by its hash), and neither tool needs to remember what the other ran;
- a local model directory enters through its digest, so changed or deleted weights rerun (or
  stop) the model stages.

Result-neutral settings are left out on purpose, so changing them reruns nothing:
:data:`RESULT_NEUTRAL` lists them. They change how the work is scheduled (batching, threads,
device, how many jobs an extraction or evaluation is split into), not what is computed; the
numbers can differ by floating-point rounding only, as they
do between two GPUs. ``metrics.json`` records the device and the evaluation batch size it was
made with; force a rerun (``snakemake --forcerun evaluate``, ``dvc repro -f``) to remeasure.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mimic.io.atomic import atomic_write_text
from mimic.pipeline.params import (
    ICL_REFERENCE,
    ParamsError,
    data_spec,
    eval_settings,
    max_new_tokens,
    method_demos,
    method_hp,
    method_shots,
    model_source,
    processor_settings,
    prompt_preset,
    run_methods,
    run_seeds,
    seeded,
    teacher_shots,
)
from mimic.pipeline.paths import seed_dir

SETTINGS_DIR = Path("results") / "settings"
DIGEST_CACHE = Path("results") / ".file-digests.json"
RESULT_NEUTRAL = ("teacher.batch_size", "eval.batch_size", "models.*.threads", "models.*.device",
                  "teacher.jobs", "eval.jobs")
# The files of a model directory that do not change what it computes.
_NOT_MODEL_FILES = ("README", "LICENSE", ".")


@dataclass(frozen=True)
class StageInstance:
    """One job of the pipeline: a stage and the names it runs for (model, task, seed, method)."""

    stage: str
    names: tuple[tuple[str, str], ...] = ()

    @property
    def settings_file(self) -> Path:
        return settings_file(self.stage, **dict(self.names))


def settings_file(stage: str, model: str | None = None, task: str | None = None, method: str | None = None,
                  seed: int | str | None = None) -> Path:
    """``results/settings/<stage>/[<model>/][<task>/][seed-<s>/]<last name>.json`` (``report.json`` for the
    report; latency, timed on the first seed only, has no seed level)."""
    level = None if seed is None else seed_dir(seed)
    parts = [p for p in (model, task, level, method) if p is not None]
    if not parts:
        return SETTINGS_DIR / f"{stage}.json"
    return SETTINGS_DIR.joinpath(stage, *parts[:-1], f"{parts[-1]}.json")


def stage_instances(params: dict) -> list[StageInstance]:
    """Every job of the run (``run.*``), as ``dvc repro`` computes them (Snakemake skips
    extract-teacher when ``teacher.mode`` is online; dvc.yaml cannot make it conditional)."""
    run, seeds = params["run"], run_seeds(params)
    tasks = [(("task", t), ("seed", s)) for t in run["tasks"] for s in seeds]
    out = [StageInstance(stage, task) for stage in ("prepare", "embed", "sample-icd") for task in tasks]
    triples = [(("model", m), *task) for m in run["models"] for task in tasks]
    out += [StageInstance("extract-teacher", triple) for triple in triples]
    out += [StageInstance("train", (*triple, ("method", x))) for triple in triples for x in run["trained"]]
    out += [StageInstance("evaluate", (*triple, ("method", x))) for triple in triples for x in run_methods(params)]
    out += [StageInstance("latency", (("model", m), ("task", t))) for m in run["models"] for t in run["tasks"]]
    out.append(StageInstance("report"))
    return out


def result_settings(params: dict, stage: str, model: str | None = None, task: str | None = None,
                    method: str | None = None, root: str | os.PathLike = ".", seed: int | None = None) -> dict:
    """The params.yaml values (and model digest) the results of one stage instance depend on; with
    ``seed``, under that run seed's params (:func:`mimic.pipeline.params.seeded`; the commands pass params already
    seeded). Latency times the first run seed: its settings are that seed's."""
    if stage == "latency":
        seed = run_seeds(params)[0]
    if seed is not None:
        params = seeded(params, seed)
    teacher, ev = params["teacher"], params["eval"]
    if stage in ("prepare", "embed"):  # the task's data: not the keys that only change its scoring
        data = data_spec(params, task)
    if stage == "prepare":
        return {"seed": params["seed"], "task": data}
    if stage == "embed":
        source = params["icd"].get("embedding")
        if source in params["models"]:  # the model's own vision tower: its files decide
            return {"seed": params["seed"], "task": data, "embedding": source,
                    "model": model_identity(params, source, root)}
        return {"seed": params["seed"], "task": data, "embedding": source}
    if stage == "sample-icd":
        return {"icd": params["icd"]}
    if stage == "report":
        return {"run": params["run"], "metric_variant": ev["metric_variant"]}
    found = {"model": model_identity(params, model, root), "icd": params["icd"]}
    if stage == "extract-teacher":
        kept = {k: teacher[k] for k in ("target", "dtype", "shard_size")}
        return {**found, "teacher": {**kept, "logits_topk": teacher.get("logits_topk", 0)},
                "shots": teacher_shots(params, model)}
    if stage == "latency":  # the methods timed: types and shots (a checkpoint is an input of its own)
        timed = {m: {"type": params["methods"][m]["type"], "shots": method_shots(params, m, model),
                     "demos": method_demos(params, m)} for m in run_methods(params)}
        return {**found, "latency": params["latency"], "num_beams": eval_settings(params, model)["num_beams"],
                "methods": timed, "seed": seed}
    kind = params["tasks"][task]["kind"]
    entry = params["methods"][method]
    if "train" in entry:  # with the model's overrides of the training settings (the per-model protocol)
        entry = {**entry, "train": method_hp(params, method, model)}
    found.update(task_kind=kind, method=entry, shots=method_shots(params, method, model))
    if stage == "train":
        return {**found, "teacher": {k: teacher[k] for k in ("mode", "target")}}
    if stage == "evaluate":
        ev = eval_settings(params, model)
        kept = {"num_beams": ev["num_beams"], "length_penalty": ev.get("length_penalty", 1.0),
                "max_new_tokens": max_new_tokens(ev, kind), "limit": ev["limit"],
                "metric_variant": ev["metric_variant"]}
        if kind == "multiple-choice":  # answered by likelihood ranking: no generation settings apply
            kept = {"limit": ev["limit"], "rank_by": params["tasks"][task].get("rank_by", "mean")}
        if ev.get("stop", "newline") != "newline":  # absent at its default: settings made before it stay valid
            kept["stop"] = ev["stop"]
        if params["tasks"][task].get("stem"):  # likewise
            kept["stem"] = True
        return {**found, "eval": kept, "reference": method == ICL_REFERENCE}
    raise ValueError(f"unknown stage {stage!r}")


def model_identity(params: dict, model: str, root: str | os.PathLike = ".") -> dict:
    """What identifies a model's computation: source, dtype, prompt preset, processor settings and,
    for a local directory, the sha256 of its files (hub models: the hub id; pin a revision by a
    local copy)."""
    entry = params["models"][model]
    source = model_source(params, model)
    identity = {"source": source, "dtype": entry["dtype"], "prompt": prompt_preset(params, model),
                "processor": processor_settings(params, model)}
    if entry.get("path"):
        identity["files"] = model_digest(model, Path(root) / entry["path"], Path(root) / DIGEST_CACHE)
    return identity


def model_files(directory: Path) -> list[Path]:
    """The files of a model directory that loading reads (not READMEs, licences or hidden files)."""
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(_NOT_MODEL_FILES) for part in p.relative_to(directory).parts)
    )


def model_digest(model: str, directory: Path, cache_path: Path | None = None) -> str:
    """sha256 over the model's files and their sha256; each file's hash is cached by (size, mtime, inode)."""
    where = f"models.{model}.path = {directory}"
    if not directory.is_dir():
        raise ParamsError(f"params.yaml: {where}: no such directory; point it at a local copy of the model "
                          "or set it to null and use hub_id")
    files = model_files(directory)
    names = {p.name for p in files}
    if "config.json" not in names:
        raise ParamsError(f"params.yaml: {where}: no config.json in it; it is not a transformers model directory")
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise ParamsError(f"params.yaml: {where}: no weights (*.safetensors or *.bin) in it; restore them "
                          f"(`git checkout -- {directory}` where git has them) or download the model again")
    cache = _read_cache(cache_path)
    total = hashlib.sha256()
    for path in files:
        total.update(f"{path.relative_to(directory).as_posix()}\0{file_sha256(path, cache)}\0".encode())
    _write_cache(cache_path, cache)
    return total.hexdigest()


def file_sha256(path: Path, cache: dict | None = None) -> str:
    """sha256 of a file; with ``cache``, reused while the file's size, mtime and inode are unchanged."""
    st = path.stat()
    key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino]
    if cache is not None and cache.get(key, {}).get("stat") == stamp:
        return cache[key]["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if cache is not None:
        cache[key] = {"stat": stamp, "sha256": digest.hexdigest()}
    return digest.hexdigest()


def _read_cache(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


_READ_ONLY = False  # while True (:func:`read_only`), the digest cache is read but never written


@contextmanager
def read_only():
    """Compute settings without writing anything (the digest cache included): for a dry run."""
    global _READ_ONLY
    before, _READ_ONLY = _READ_ONLY, True
    try:
        yield
    finally:
        _READ_ONLY = before


def _write_cache(path: Path | None, cache: dict | None) -> None:
    if _READ_ONLY:
        return
    if path is not None and cache is not None and cache != _read_cache(path):
        atomic_write_text(path, json.dumps(cache, sort_keys=True))


def differences(recorded: dict, expected: dict, prefix: str = "") -> list[str]:
    """``key: recorded -> expected`` for every setting that differs (nested keys dotted)."""
    out = []
    for key in sorted(set(recorded) | set(expected)):
        a, b = recorded.get(key), expected.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def render(instance: StageInstance, settings: dict) -> str:
    doc = {"stage": instance.stage, **dict(instance.names), "settings": settings}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def changed_settings(params: dict, root: str | os.PathLike = ".") -> dict[Path, str]:
    """The settings files (relative to ``root``) whose content differs from what ``params`` gives,
    with their new content. Checks the local model directories (:class:`ParamsError`)."""
    root = Path(root)
    changed = {}
    for instance in stage_instances(params):
        text = render(instance, result_settings(params, instance.stage, root=root, **dict(instance.names)))
        try:
            if (root / instance.settings_file).read_text() == text:
                continue
        except OSError:
            pass
        changed[instance.settings_file] = text
    return changed


def write_settings(params: dict, root: str | os.PathLike = ".") -> list[Path]:
    """Write the settings file of every stage instance of the run whose content changed.

    Computes all of them first (checking the local model directories), then writes: a failure
    leaves every settings file as it was. Returns the files written.
    """
    changed = changed_settings(params, root)
    for path, text in changed.items():
        atomic_write_text(Path(root) / path, text)
    return list(changed)


def preview_settings(params: dict, root: str | os.PathLike = ".") -> dict[Path, Path]:
    """For a dry run, which must leave the project as it is: the settings files whose content changed (or that are
    missing), written under a temporary directory instead of their place (removed when the process ends). Returns
    {settings file: its stand-in}; the Snakefile gives a job the stand-in as its settings input, so that
    ``snakemake -n`` plans exactly the jobs the real run will (the stand-in is newer than their outputs)."""
    with read_only():
        changed = changed_settings(params, root)
    if not changed:
        return {}
    folder = Path(tempfile.mkdtemp(prefix="mimic-dry-run-settings-"))
    atexit.register(shutil.rmtree, folder, True)
    stand_ins = {}
    for path, text in changed.items():
        stand_in = folder / path
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text(text)
        stand_ins[path] = stand_in
    return stand_ins
