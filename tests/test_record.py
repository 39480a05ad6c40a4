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
