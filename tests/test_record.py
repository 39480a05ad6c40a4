"""mimic.pipeline.dvc: what `mimic record` commits to dvc.lock, on a real two-stage DVC project."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("dvc", reason="mimic record needs dvc (pip install dvc)")

from mimic.pipeline.dvc import record  # noqa: E402

DVC_YAML = textwrap.dedent(
    """
    stages:
      up:
        cmd: python -c "open('a.txt', 'w').write('same')"
        outs: [a.txt]
      down:
        cmd: python -c "open('b.txt', 'w').write(open('a.txt').read() + '!')"
        deps: [a.txt]
        outs: [b.txt]
    """
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as in the pipeline: `mimic record` runs in the project's root
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env, capture_output=True)
    return tmp_path


def rewrite(path, text: str) -> None:
    """Write ``text`` with a mtime clearly after every other file's (a job that just ran)."""
    path.write_text(text)
    later = time.time() + 5
    os.utime(path, (later, later))


def test_an_upstream_output_remade_with_the_same_bytes_keeps_the_stage_after_it_recorded(project):
    """Snakemake does not rerun `down` when a.txt is remade with the bytes it had (input checksums),
    DVC neither (hashes): record agrees and leaves `down` as recorded, so a change further down
    (here: b.txt's own stage) can still be recorded."""
    rewrite(project / "a.txt", "same")
    result = record(project, params={})
    assert result.stale == {}
    assert sorted(result.unchanged) == ["down", "up"]


def test_an_upstream_output_with_other_bytes_leaves_the_stage_after_it_unrecorded(project):
    rewrite(project / "a.txt", "other")  # `up` remade differently: b.txt is stale in both tools
    result = record(project, params={})
    assert result.committed == ["up"]
    assert result.stale == {"down": "a.txt is newer than its outputs"}


def test_a_finished_record_owes_nothing_and_a_started_one_owes_a_record(project):
    from mimic.pipeline.dvc import RECORD_DUE, mark_record_due, record_due

    assert record_due(project) is None
    mark_record_due(project)  # what a Snakemake run's onstart, and a record's start, write
    assert record_due(project) == "the last run or record did not finish recording"
    record(project, params={})
    assert not (project / RECORD_DUE).exists() and record_due(project) is None


def test_a_half_written_dvc_lock_is_owed_a_record(project):
    from mimic.pipeline.dvc import record_due

    lock = project / "dvc.lock"
    text = lock.read_text()
    lock.write_text(text[: len(text) // 2] + "\n  - [")  # a kill in the middle of a plain write
    assert record_due(project) == "dvc.lock is unreadable"


def test_the_record_writes_dvc_lock_by_rename_never_in_place(project, monkeypatch):
    """A kill at any moment leaves dvc.lock whole: the file DVC writes is a new inode renamed over it."""
    import mimic.io.atomic as atomic

    writes = []
    real = atomic.atomic_write_text
    monkeypatch.setattr(atomic, "atomic_write_text", lambda path, text: (writes.append(path), real(path, text)))
    old = (project / "dvc.lock").read_text()
    with open(project / "dvc.lock") as held:  # the file as it was (its inode stays while it is open)
        rewrite(project / "a.txt", "other")
        rewrite(project / "b.txt", "other!")
        assert sorted(record(project, params={}).committed) == ["down", "up"]
        assert held.read() == old  # never written in place
    assert [os.path.basename(w) for w in writes if os.path.basename(w) == "dvc.lock"] == ["dvc.lock"] * 2
    assert (project / "dvc.lock").read_text() != old
    from dvc.utils.serialize import _common

    assert _common._dump_data.__module__.startswith("dvc")  # DVC's own writer is back after the record


def test_an_unreadable_rwlock_left_by_a_killed_dvc_is_removed(project):
    from mimic.pipeline.dvc import RWLOCK, repair_rwlock

    (project / RWLOCK).write_text('{"read": {}, "write": {}}')
    assert not repair_rwlock(project, settle_s=0) and (project / RWLOCK).exists()  # a whole lock is DVC's
    (project / RWLOCK).write_text("")
    assert repair_rwlock(project, settle_s=0) and not (project / RWLOCK).exists()
    (project / RWLOCK).write_text('{"read": {}, "wri')
    rewrite(project / "a.txt", "other")
    assert record(project, params={}).committed == ["up"]  # DVC would refuse every command with it


def test_outputs_snakemake_marked_incomplete_are_not_recorded(project):
    """A failed job's previous outputs, put back and marked incomplete by the Snakefile's onerror, are not results
    of the inputs it failed on: left out of dvc.lock (and what depends on them) until the job is redone."""
    from base64 import urlsafe_b64encode

    from mimic.pipeline.dvc import mark_failed_jobs_incomplete

    rewrite(project / "a.txt", "other")  # `up` ran again (new inputs) ...
    rewrite(project / "b.txt", "other!")
    marker = project / ".snakemake" / "incomplete" / urlsafe_b64encode(b"a.txt").decode()
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")  # ... and failed: its old output put back, marked incomplete
    result = record(project, params={})
    assert result.committed == [] and result.stale["up"].startswith("a.txt is marked incomplete")
    assert result.stale["down"] == "upstream stage up is not up to date"
    marker.unlink()
    assert sorted(record(project, params={}).committed) == ["down", "up"]

    class Job:
        def __init__(self, rule):
            self.rule = type("Rule", (), {"name": rule})()

    marked = []
    failed = [Job("train"), Job("evaluate")]
    workflow = type("Workflow", (), {"scheduler": type("S", (), {"failed": failed})(),
                                     "persistence": type("P", (), {"started": staticmethod(marked.append)})()})()
    assert sorted(mark_failed_jobs_incomplete(workflow)) == ["evaluate", "train"] and marked == sorted(failed, key=str)
    workflow.scheduler = None  # stopped before scheduling (onstart's checks)
    assert mark_failed_jobs_incomplete(workflow) == []
