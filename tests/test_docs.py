"""What the README and docs/ tell a user exists: every `mimic.<name>` they cite, every `mimic <command>`, every file
path they link, and the commands the tests run through the real tools."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from mimic.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "params.yaml"]
# `mimic.<name>` not preceded by a word, a dot, a slash or a dash (so not `methods.mimic.train.lr`, a params key);
# file names such as mimic.safetensors are left out by their extension.
CITED = re.compile(r"(?<![\w./-])mimic(?:\.[A-Za-z_]\w*)+")
FILE_EXTENSIONS = (".safetensors", ".yaml", ".json", ".py", ".md", ".csv", ".log")


def resolve(dotted: str):
    """The module or attribute a dotted name names; raises when it names nothing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def citations() -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for name in CITED.findall(doc.read_text()):
            if not name.endswith(FILE_EXTENSIONS):
                found.add((doc.relative_to(REPO).as_posix(), name))
    return sorted(found)


def test_the_docs_cite_names():
    assert len(citations()) > 20  # the pattern finds what the docs cite


@pytest.mark.parametrize(("doc", "name"), citations(), ids=[f"{d}:{n}" for d, n in citations()])
def test_every_cited_mimic_name_exists(doc, name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{doc} cites {name}, which does not exist ({exc})")


def test_every_mimic_command_the_docs_show_exists():
    shown = {m.group(1) for doc in DOCS for m in re.finditer(r"`mimic ([a-z][a-z-]+)", doc.read_text())}
    assert shown, "no `mimic <command>` found"
    assert sorted(shown - set(COMMANDS)) == []


def test_every_linked_file_exists():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links {target}, which does not exist"


def test_the_docs_show_the_commands_the_tool_tests_run():
    pytest.importorskip("snakemake")
    pytest.importorskip("dvc")
    from test_tool_habits import EXP_SHOW

    pipeline = (REPO / "docs" / "pipeline.md").read_text()
    shown = " ".join(a if re.fullmatch(r"[\w.=-]+", a) else f"'{a}'" for a in EXP_SHOW if a != "--csv")
    assert f"dvc {shown}" in pipeline
    for command in ("dvc exp run --queue -S methods.mimic.train.lr=", "dvc queue start", "snakemake -n",
                    "mimic validate && dvc status", "snakemake --report report.html", "git add -A && git commit",
                    "snakemake all --configfile other.yaml", "snakemake --touch all"):
        assert command in pipeline, command
    assert "git add -A && git commit" in (REPO / "README.md").read_text()  # the baseline of `dvc exp show`
