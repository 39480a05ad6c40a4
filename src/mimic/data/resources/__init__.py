"""Data files shipped with the package: named evaluation question sets.

:data:`QUESTION_SETS` maps a name usable as ``question_ids:`` of a VQA task in params.yaml to a
file in this folder (one question id per line) and its sha256; ``README.md`` here says where
each file comes from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class QuestionSet:
    name: str
    filename: str
    sha256: str
    description: str


QUESTION_SETS = {
    "vqav2-val-10k": QuestionSet(
        name="vqav2-val-10k",
        filename="vqav2_val_10k_question_ids.txt",
        sha256="93cb26ec0bbdc95baa74f216c5cfb04fe062d4a739bf5e18cda4ea1f8d456ba4",
        description="the 10,000 VQAv2 val2014 questions LIVE and MimIC report on (from the LIVE repository)",
    ),
}


def question_set(name: str) -> tuple[QuestionSet, str]:
    """The named set and its file's text, checked against the recorded sha256."""
    entry = QUESTION_SETS[name]
    data = resources.files(__package__).joinpath(entry.filename).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise RuntimeError(
            f"the shipped question set {name} ({entry.filename}) has sha256 {digest}, expected {entry.sha256}: "
            "the installed package is damaged; reinstall it"
        )
    return entry, data.decode()
