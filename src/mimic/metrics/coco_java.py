"""The two Java steps of the COCO caption evaluation, run without writing into site-packages.

``pycocoevalcap`` tokenizes with the Stanford PTB tokenizer and scores METEOR with the
METEOR 1.5 jar, both shipped inside the package. Its ``PTBTokenizer`` writes its input to a
temporary file *next to the jar* (``tempfile.NamedTemporaryFile(dir=<package dir>)``), which
fails when the package directory is read-only (system installs, containers, shared
virtualenvs). :func:`ptb_tokenize` runs the same jar with the same arguments and the same
post-processing, with the temporary file in a private writable directory instead.
:func:`meteor_score` speaks the METEOR ``-stdio`` protocol the same way pycocoevalcap's
``Meteor`` does, with a timeout and without its lock (which a failed run leaves held, so that
the object's ``__del__`` then blocks forever).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from pycocoevalcap.meteor import meteor as _meteor
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb

PTB_JAR = Path(_ptb.__file__).absolute().parent / _ptb.STANFORD_CORENLP_3_4_1_JAR
PTB_PUNCTUATIONS = frozenset(_ptb.PUNCTUATIONS)
METEOR_JAR = Path(_meteor.__file__).absolute().parent / _meteor.METEOR_JAR
METEOR_TIMEOUT_S = 600.0


class MeteorError(RuntimeError):
    """METEOR could not be computed (no usable JVM, missing jar or paraphrase data, timeout)."""


def require_java() -> str:
    """The path of ``java``; a one-line error when it is not on PATH."""
    from mimic.errors import MissingToolError

    java = shutil.which("java")
    if java is None:
        raise MissingToolError(
            "caption metrics need Java on PATH (pycocoevalcap's PTB tokenizer and METEOR are Java programs); "
            "install a JRE, e.g. `apt-get install default-jre-headless`, or `conda install openjdk`"
        )
    return java


def ptb_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """PTB-tokenize, lower-case and drop punctuation tokens, as ``pycocoevalcap.PTBTokenizer`` does.

    ``captions`` maps an id to its captions (plain strings, not ``{"caption": ...}`` dicts).
    The tokenizer keeps one caption per line, so every kind of line break in a caption
    becomes a space (upstream replaces only ``\n``; a ``\r`` or a form feed there shifts
    every later caption onto the wrong id).
    """
    java = require_java()
    keys = [key for key, texts in captions.items() for _ in texts]
    lines = [" ".join(text.splitlines()) for texts in captions.values() for text in texts]
    with tempfile.TemporaryDirectory(prefix="mimic-ptb-") as tmp:
        source = Path(tmp) / "captions.txt"
        source.write_bytes("\n".join(lines).encode())
        cmd = [java, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
        done = subprocess.run([*cmd, source.name], cwd=tmp, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"PTB tokenizer failed (exit {done.returncode}): {done.stderr.decode(errors='replace')}")
    out_lines = done.stdout.decode().split("\n")
    if len(out_lines) == len(lines) + 1 and out_lines[-1] == "":
        out_lines.pop()  # the final newline
    if len(out_lines) != len(lines):
        raise RuntimeError(f"PTB tokenizer returned {len(out_lines)} lines for {len(lines)} captions")
    tokenized: dict[str, list[str]] = {key: [] for key in captions}
    for key, line in zip(keys, out_lines, strict=True):
        tokenized[key].append(" ".join(word for word in line.rstrip().split(" ") if word not in PTB_PUNCTUATIONS))
    return tokenized


def meteor_score(references: Mapping[str, list[str]], hypotheses: Mapping[str, list[str]]) -> float:
    """Corpus METEOR in [0, 1] of tokenized ``hypotheses`` (one per id) against ``references``.

    Raises :class:`MeteorError` when the METEOR process cannot produce a score.
    """
    java = require_java()
    if not METEOR_JAR.is_file():
        raise MeteorError(f"METEOR jar {METEOR_JAR} is missing")
    cmd = [java, "-jar", "-Xmx2G", str(METEOR_JAR), "-", "-", "-stdio", "-l", "en", "-norm"]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            cmd, cwd=METEOR_JAR.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        result: dict[str, float | BaseException] = {}
        worker = threading.Thread(target=_meteor_session, args=(proc, references, hypotheses, result), daemon=True)
        worker.start()
        worker.join(METEOR_TIMEOUT_S)
        if worker.is_alive():
            proc.kill()
            worker.join()
            result.setdefault("error", MeteorError(f"METEOR did not finish within {METEOR_TIMEOUT_S:.0f} s"))
        _close(proc)
        if "score" in result:
            return float(result["score"])
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        raise MeteorError(f"METEOR failed: {result.get('error')}; java said: {' | '.join(detail) or '(nothing)'}")


def _meteor_session(proc: subprocess.Popen, references, hypotheses, result: dict) -> None:
    """One SCORE line per id (each answered by a statistics line), then one EVAL line."""
    try:
        stats = []
        for key in references:
            hypothesis = hypotheses[key][0].replace("|||", "").replace("  ", " ")
            stats.append(_meteor_exchange(proc, " ||| ".join(("SCORE", " ||| ".join(references[key]), hypothesis))))
        _meteor_send(proc, " ||| ".join(["EVAL", *stats]))
        for _ in stats:  # one score per id, then the corpus score
            _meteor_read(proc)
        result["score"] = float(_meteor_read(proc))
    except (OSError, ValueError) as err:
        result["error"] = err


def _meteor_send(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(f"{line}\n".encode())
    proc.stdin.flush()


def _meteor_read(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    if not line:
        raise OSError(f"the METEOR process ended early (exit code {proc.poll()})")
    return line.decode().strip()


def _meteor_exchange(proc: subprocess.Popen, line: str) -> str:
    _meteor_send(proc, line)
    return _meteor_read(proc)


def _close(proc: subprocess.Popen) -> None:
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            stream.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
