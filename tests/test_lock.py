"""The locks (requirements/*.lock) are what `make run` / `make test` install, and they fit pyproject.toml.

`make test` installs requirements/test.lock with `pip install --require-hashes --no-deps`: exactly the
lock, nothing resolved. The first test fails wherever the running environment holds another version of
any locked package (an install by hand, a stale .venv, a fresh resolution), so the suite's result always
belongs to the lock. torch is not locked: the setup installs requirements/torch.txt's CPU build only
where the venv has no torch, so a GPU user's CUDA build is kept.
"""

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"run": ("pipeline",), "test": ("pipeline", "test", "slurm")}  # lock: the extras it installs


def _drift_tool():
    spec = importlib.util.spec_from_file_location("lock_drift", ROOT / "tools" / "lock_drift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_drift = _drift_tool()


def lock(name: str) -> dict[str, str]:
    return lock_drift.read_lock(ROOT / "requirements" / f"{name}.lock")


def test_every_locked_version_is_the_installed_one():
    rows = lock_drift.drift(lock("test"), lock_drift.installed_versions())
    assert not rows, ("the environment differs from requirements/test.lock (reinstall with `rm .venv/.test; "
                      f"make setup-test`): {rows}")


def test_the_environment_runs_the_locked_transformers():
    """The one version the suite's model code leans on most, named on its own."""
    import transformers

    assert transformers.__version__ == lock("test")["transformers"]


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    for extra in extras:
        specs += project["project"]["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_each_lock_pins_every_requirement_within_pyprojects_range(name):
    pins = lock(name)
    for req in _requirements(LOCKS[name]):
        key = lock_drift.canonical(req.name)
        if key == "torch":
            assert key not in pins, "torch must stay out of the locks (a GPU user's CUDA build is kept)"
            continue
        assert key in pins, f"{name}.lock has no {req.name}: run `make lock` after editing pyproject.toml"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"{name}.lock pins {req.name}=={pins[key]}, outside pyproject.toml's {req}: run `make lock`")


def test_the_default_torch_is_within_pyprojects_range():
    (torch_req,) = [r for r in _requirements(()) if r.name == "torch"]
    (line,) = (ROOT / "requirements" / "torch.txt").read_text().split()
    pinned = Requirement(line)
    (version,) = [s.version for s in pinned.specifier if s.operator == "=="]
    assert pinned.name == "torch" and torch_req.specifier.contains(version)


def test_the_locks_agree_and_every_pin_carries_hashes():
    run, test = lock("run"), lock("test")
    assert set(run) < set(test)
    assert {k: v for k, v in test.items() if k in run} == run
    for name in LOCKS:
        text = (ROOT / "requirements" / f"{name}.lock").read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
        pinned = [b for b in blocks if lock_drift.PIN.match(b)]
        assert len(pinned) == len(lock(name))
        assert all(re.search(r"--hash=sha256:[0-9a-f]{64}", b) for b in pinned), name


LOCK_TEXT = """\
# a comment naming pkg==9.9
Foo_Bar==1.0 \\
    --hash=sha256:aa
    # via baz
baz==2.0 \\
    --hash=sha256:bb
qux==3 \\
    --hash=sha256:cc

# The following packages are considered to be unsafe in a requirements file:
# torch
"""


def test_drift_names_every_pin_the_environment_does_not_match(tmp_path, capsys, monkeypatch):
    path = tmp_path / "x.lock"
    path.write_text(LOCK_TEXT)
    assert lock_drift.read_lock(path) == {"foo-bar": "1.0", "baz": "2.0", "qux": "3"}
    installed = {"foo-bar": "1.0", "baz": "2.1", "other": "1"}
    assert lock_drift.drift(lock_drift.read_lock(path), installed) == [("baz", "2.0", "2.1"), ("qux", "3", None)]
    assert lock_drift.drift({"foo-bar": "1.0"}, installed) == []
    monkeypatch.setattr(lock_drift, "installed_versions", lambda: installed)
    assert lock_drift.main([str(path), "--strict"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"lock drift: 2 of 3 pins of {path} differ from this environment"
    assert out[1].split() == ["baz", "locked", "2.0", "installed", "2.1"]
    assert out[2].split() == ["qux", "locked", "3", "installed", "(missing)"]
    assert lock_drift.main([str(path)]) == 0  # not strict: report only
