"""mimic demo: attach MimIC to tiny random Idefics models and run the exactness check."""

from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from mimic.tiny.demo import run_demo

    return run_demo()
