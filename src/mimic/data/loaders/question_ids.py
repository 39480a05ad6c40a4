"""A fixed list of evaluation question ids for a VQA task: ``question_ids:`` of its spec.

The value is the name of a question set shipped with the package (:data:`QUESTION_SETS`,
e.g. ``vqav2-val-10k``: the 10,000 VQAv2 val2014 questions LIVE and MimIC report on), a path to
a text file with one question id per line (blank lines ignored), or a list of ids. The
evaluation split is then exactly those questions, in the list's order (see
:func:`mimic.data.loaders.common.assemble_task` for how ``n_eval`` and bad records interact).

Ids are compared as text, with digit-only ids read as integers (``"0042"`` is question 42), so
a list of ints, a file and a hub column of int or string ids all match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimic.data.resources import QUESTION_SETS, question_set


@dataclass(frozen=True)
class QuestionIds:
    """The evaluation question ids of a task, in order, and where they came from."""

    ids: tuple[str, ...]
    source: str  # "vqav2-val-10k" (a shipped set), a file path, or "a list in params.yaml"

    def meta(self) -> dict:
        """What meta.json records: the source, the count and the sha256 of the ids, one per line."""
        digest = hashlib.sha256("".join(f"{i}\n" for i in self.ids).encode()).hexdigest()
        return {"source": self.source, "count": len(self.ids), "sha256": digest}


def canonical_id(value: Any) -> str:
    """A question id as compared: its text, digit-only ids without leading zeros."""
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


def resolve_question_ids(value: Any, title: str, where: str) -> QuestionIds | None:
    """``question_ids`` of a spec (``where`` names it in messages) as :class:`QuestionIds`; ``None`` stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        if value in QUESTION_SETS:
            _, text = question_set(value)
            return _checked(_lines(text), value, title, where)
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{title}: {where} = {value!r} is neither a shipped question set ({', '.join(QUESTION_SETS)}) "
                "nor an existing file of question ids (one per line)"
            )
        return _checked(_lines(path.read_text(encoding="utf-8")), str(path), title, where)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | str) or not str(item).strip():
                raise ValueError(f"{title}: {where} holds {item!r}; question ids are integers or non-empty strings")
        return _checked(list(value), "a list in params.yaml", title, where)
    raise ValueError(
        f"{title}: {where} must be a shipped question set ({', '.join(QUESTION_SETS)}), a path to a file of "
        f"question ids or a list of ids, got {type(value).__name__}"
    )


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _checked(raw: list, source: str, title: str, where: str) -> QuestionIds:
    ids = [canonical_id(item) for item in raw]
    if not ids:
        raise ValueError(f"{title}: {where} ({source}) lists no question ids")
    seen: set[str] = set()
    for qid in ids:
        if qid in seen:
            raise ValueError(f"{title}: {where} ({source}) lists question id {qid} more than once")
        seen.add(qid)
    return QuestionIds(tuple(ids), source)
