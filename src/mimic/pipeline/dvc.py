"""Snakemake runs, DVC versions: the glue that keeps one state between the two tools.

:func:`record` writes Snakemake's up-to-date outputs into dvc.lock and DVC's cache;
:func:`forget_replaced_outputs` drops Snakemake's records of outputs that something else
(``dvc repro``, ``dvc checkout``) has replaced since Snakemake made them.


``record(root)`` is what ``mimic record`` (run by the Snakefile's ``onsuccess``) does: for every
stage of dvc.yaml, upstream first, it decides whether the outputs on disk are the stage's
up-to-date results *by Snakemake's own rule* (all outputs and dependencies exist, no dependency is
newer than the oldest output unless its content is the one dvc.lock recorded for the stage -- a rerun
upstream that remade the same bytes, which Snakemake's input checksums also let through --, every
upstream stage is up to date; for ``validate``: the settings files equal what params.yaml gives
now) and commits those that DVC does not already have:
``dvc commit --force`` of exactly those stages, without rewriting the workspace files (their
mtimes are what Snakemake decides by). A stage whose outputs are stale or missing is left
out, so ``dvc status`` still names it: dvc.lock never claims a result it does not hold.

Interrupted records (a kill in the middle of ``mimic record``, or of ``snakemake all`` before its ``onsuccess``)
are repaired by themselves: every write of dvc.lock during a record is atomic (a temporary file, then a
rename), so dvc.lock is always a readable record of some set of stages; ``.dvc/tmp/mimic-record-due`` marks a
record that is owed (written when a Snakemake run starts its jobs and when a record starts, removed when a
record finishes), and the next ``snakemake all`` records before it plans, even when it has no job to run
(:func:`record_due`). A ``.dvc/tmp/rwlock`` that a killed DVC process left unreadable is removed first.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from base64 import urlsafe_b64decode
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mimic.errors import MimicError

log = logging.getLogger("mimic.pipeline.dvc")
VALIDATE_STAGE = "validate"
_IGNORED = {".snakemake_timestamp"}
RECORD_DUE = Path(".dvc") / "tmp" / "mimic-record-due"  # a record is owed (see the module's docstring)
RWLOCK = Path(".dvc") / "tmp" / "rwlock"


@dataclass
class Recorded:
    committed: list[str] = field(default_factory=list)  # stages written to dvc.lock and the cache
    unchanged: list[str] = field(default_factory=list)  # stages dvc.lock already described
    stale: dict[str, str] = field(default_factory=dict)  # stage -> why it was left out


def _mtimes(path: Path) -> list[float]:
    if path.is_dir():
        return [
            os.stat(os.path.join(d, f)).st_mtime
            for d, _, files in os.walk(path)
            for f in files
            if f not in _IGNORED
        ] or [path.stat().st_mtime]
    return [path.stat().st_mtime]


def _why_stale(stage, root: Path, params: dict | None, incomplete: set[Path] = frozenset()) -> str | None:
    """None when the stage's outputs are its up-to-date results by Snakemake's rule, else why not."""
    from dvc.dependency.param import ParamsDependency

    outs = [root / o.def_path for o in stage.outs]
    missing = [str(p.relative_to(root)) for p in outs if not p.exists()]
    if missing:
        return f"missing output {missing[0]}"
    marked = [str(p.relative_to(root)) for p in outs if any(m == p or p in m.parents for m in incomplete)]
    if marked:
        return f"{marked[0]} is marked incomplete (its job failed or was interrupted; the next run redoes it)"
    if stage.name == VALIDATE_STAGE:
        from mimic.pipeline.stages import changed_settings

        changed = changed_settings(params, root)
        return f"{next(iter(changed))} does not match params.yaml" if changed else None
    deps = [(root / d.def_path, d) for d in stage.deps if not isinstance(d, ParamsDependency)]
    missing = [str(p.relative_to(root)) for p, _ in deps if not p.exists()]
    if missing:
        return f"missing dependency {missing[0]}"
    oldest_out = min(t for p in outs for t in _mtimes(p))
    for path, dep in deps:
        # Newer but with the content dvc.lock recorded for this stage: a rerun upstream remade the
        # same bytes, and Snakemake (input checksums) as DVC (hashes) leave the stage as it is.
        if max(_mtimes(path)) > oldest_out and _changed(dep):
            return f"{path.relative_to(root)} is newer than its outputs"
    return None


def _changed(dep) -> bool:
    """Whether the dependency's content differs from what dvc.lock recorded (or nothing is recorded)."""
    try:
        return bool(dep.changed())
    except Exception:  # noqa: BLE001 - anything DVC cannot compare counts as changed
        return True


def record(root: str | os.PathLike = ".", params: dict | None = None) -> Recorded | None:
    """Commit the up-to-date stages to dvc.lock and DVC's cache; None when ``root`` is no DVC repo."""
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        return None
    mark_record_due(root)
    try:
        import networkx as nx
        from dvc.repo import Repo
    except ImportError as exc:
        raise MimicError(f"cannot record the outputs in DVC: {exc}; install it with `pip install dvc`") from None
    if params is None:
        from mimic.pipeline.params import load_params

        params = load_params(root / "params.yaml")
    result = Recorded()
    repair_rwlock(root)
    with _atomic_lockfile_writes(), Repo(str(root)) as repo:
        graph = repo.index.graph  # edges: stage -> the stages it depends on
        stages = [s for s in reversed(list(nx.topological_sort(graph))) if s.cmd]
        fresh = set()
        incomplete = {output for output, _ in _records(root, "incomplete")}
        for stage in stages:
            upstream = [s for s in graph.successors(stage) if s.cmd]
            stale_up = [s.addressing for s in upstream if s not in fresh]
            why = (f"upstream stage {stale_up[0]} is not up to date" if stale_up
                   else _why_stale(stage, root, params, incomplete))
            if why:
                result.stale[stage.addressing] = why
            else:
                fresh.add(stage)
        for stage in stages:
            if stage not in fresh:
                continue
            with repo.lock:
                changed = stage.changed()
            if not changed:
                result.unchanged.append(stage.addressing)
                continue
            repo.commit(stage.addressing, force=True, relink=False)
            result.committed.append(stage.addressing)
    (root / RECORD_DUE).unlink(missing_ok=True)
    return result


def mark_record_due(root: str | os.PathLike = ".") -> None:
    """Note that a record is owed (nothing outside a DVC repository): the Snakefile's ``onstart`` and
    :func:`record` call this; a finished record removes the mark."""
    from mimic.io.atomic import atomic_write_text

    root = Path(root)
    if (root / ".dvc").is_dir():
        atomic_write_text(root / RECORD_DUE, f"pid {os.getpid()} at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")


def record_due(root: str | os.PathLike = ".") -> str | None:
    """Why a record is owed (a run or a record that did not finish, an unreadable dvc.lock), or None."""
    root = Path(root)
    if not (root / ".dvc").is_dir():
        return None
    if (root / RECORD_DUE).is_file():
        return "the last run or record did not finish recording"
    lock = root / "dvc.lock"
    if lock.is_file():
        import yaml

        try:
            data = yaml.safe_load(lock.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return "dvc.lock is unreadable"
        if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
            return "dvc.lock is unreadable"
    return None


def repair_rwlock(root: str | os.PathLike = ".", settle_s: float = 1.0) -> bool:
    """Remove DVC's ``.dvc/tmp/rwlock`` when a killed DVC process left it unreadable (DVC then refuses every
    command); True when it did. A lock being written is whole within microseconds: it counts as damaged
    only when it is still unreadable ``settle_s`` later."""
    path = Path(root) / RWLOCK

    def damaged() -> bool:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (ValueError, UnicodeDecodeError):
            return True
        return not isinstance(data, dict)

    if not damaged():
        return False
    time.sleep(settle_s)
    if not damaged():
        return False
    path.unlink(missing_ok=True)
    log.info("removed %s: a DVC process was killed while writing it", path)
    return True


@contextmanager
def _atomic_lockfile_writes():
    """DVC's writes of dvc.lock as a temporary file and a rename, so a kill never leaves it half written.

    DVC writes its YAML files with ``open(path, "w")`` (``dvc.utils.serialize._common._dump_data``); for the
    duration of a record that one function writes to a temporary file beside the target instead. Where DVC
    no longer has it, the record goes on with DVC's own writes (``record_due`` still repairs a broken lock)."""
    try:
        from dvc.utils.serialize import _common
    except ImportError:
        yield
        return
    dump = getattr(_common, "_dump_data", None)
    if dump is None:
        yield
        return

    def atomic_dump(path, data, dumper, fs=None, **dumper_args):
        from mimic.io.atomic import atomic_write_text

        if fs is not None and getattr(fs, "protocol", None) != "local":  # not the work tree: DVC's own write
            return dump(path, data, dumper, fs=fs, **dumper_args)
        stream = io.StringIO()
        dumper(data, stream, **dumper_args)
        atomic_write_text(os.fspath(path), stream.getvalue())

    _common._dump_data = atomic_dump
    try:
        yield
    finally:
        _common._dump_data = dump


_TOLERANCE_S = 1e-3  # a recorded end time is a float of the mtime: compare with some slack


def _records(root: Path, kind: str):
    """(output path, record file) of Snakemake's file-based records of ``kind``: ``metadata`` (how each output was
    made) or ``incomplete`` (outputs of jobs that started and did not finish)."""
    folder = root / ".snakemake" / kind
    for record in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if not record.is_file():
            continue
        # the output's path, urlsafe-base64 encoded; long names are split into "@"-prefixed folders
        encoded = "".join(part.removeprefix("@") for part in record.relative_to(folder).parts)
        try:
            yield root / urlsafe_b64decode(encoded).decode(), record
        except ValueError:  # not a record (Snakemake's own files there, e.g. migration_underway)
            continue


def _snakemake_records(root: Path):
    """(output path, end time, record file) of Snakemake's file-based metadata (``.snakemake/metadata``)."""
    for output, record in _records(root, "metadata"):
        try:
            endtime = json.loads(record.read_text()).get("endtime")
        except (ValueError, OSError):
            continue
        if endtime is not None and output.is_file():
            yield output, float(endtime), record


def mark_failed_jobs_incomplete(workflow) -> list[str]:
    """Mark the outputs of the jobs that failed on every attempt of this run incomplete (Snakemake's own marker);
    returns those jobs' rule names. The Snakefile's ``onerror`` calls this.

    A failed job's previous outputs are kept (``update()`` puts them back, the Slurm profile's keep-incomplete keeps
    them), but Snakemake records the job as made from the inputs it failed on and puts the old files back with a
    new mtime: with the failing settings still in place, the next run would take the old outputs for results of
    the new settings. Marked incomplete, they are redone by the next run (``rerun-incomplete`` in both profiles),
    and :func:`record` leaves them out of dvc.lock until then."""
    if getattr(workflow, "scheduler", None) is None:
        return []
    failed = sorted(workflow.scheduler.failed, key=str)
    for job in failed:
        workflow.persistence.started(job)
    return [job.rule.name for job in failed]


def forget_replaced_outputs(root: str | os.PathLike = ".") -> list[str]:
    """Drop Snakemake's metadata records of outputs replaced since Snakemake made them.

    Snakemake reruns a job when an input is newer than its outputs *unless* the input's checksum
    equals the one it recorded when it made those outputs (so editing a value and editing it back
    reruns nothing). That exception is only sound while the outputs on disk are the ones it made:
    after `dvc repro` replaced them (edit lr, `dvc repro`, edit lr back), the recorded checksum
    describes outputs that are gone. A record whose output's mtime is not the recorded end time
    is dropped (as `snakemake --cleanup-metadata` would), and the job is judged by mtimes alone.
    The Snakefile calls this before Snakemake plans the jobs. Snakemake's default file-based
    metadata only (not ``--persistence-backend db``).
    """
    root = Path(root)
    dropped = []
    for output, endtime, record in _snakemake_records(root):
        if abs(output.stat().st_mtime - endtime) > _TOLERANCE_S:
            record.unlink()
            dropped.append(str(output.relative_to(root)))
    return dropped


# The rules that make a split output (teacher.jobs / eval.jobs > 1) and the one that makes it in one job.
_SPLIT_RULES = {
    "teacher": ("teacher", "extract_teacher", "merge_teacher"),
    "eval": ("eval", "evaluate", "merge_evaluate"),
}
_PART_OF = re.compile(r"part-\d+-of-(\d+)\.")


def forget_resplit_outputs(params: dict, root: str | os.PathLike = ".") -> list[str]:
    """Drop Snakemake's records of outputs made under another ``teacher.jobs`` / ``eval.jobs``.

    How many jobs an extraction or evaluation is split into is result-neutral (the merged outputs are the
    single job's), but it changes which rule makes the output (``extract_teacher`` or ``merge_teacher``)
    and the parts it reads, and Snakemake would rerun the job for that ("code" and "input" rerun triggers).
    Such a record is dropped, and the job is judged by mtimes alone: by its settings file, which holds
    what its results depend on. The parts themselves are temp(): missing parts of a finished output do
    not rerun it. The Snakefile calls this before Snakemake plans the jobs.
    """
    root = Path(root)
    dropped = []
    for output, _, record in _snakemake_records(root):
        parts = output.relative_to(root).parts
        if len(parts) < 2 or parts[0] != "results" or parts[1] not in _SPLIT_RULES:
            continue
        section, single, merged = _SPLIT_RULES[parts[1]]
        jobs = params[section].get("jobs", 1)
        try:
            made = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        rule = made.get("rule")
        if rule not in (single, merged):
            continue
        split_as = {int(m.group(1)) for f in made.get("input") or [] if (m := _PART_OF.search(f))}
        now = single if jobs == 1 else merged
        if rule != now or (rule == merged and split_as != {jobs}):
            record.unlink()
            dropped.append(str(output.relative_to(root)))
    return dropped
