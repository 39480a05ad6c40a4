"""Progress in log files is periodic lines, not tqdm's carriage-return frames; terminals keep the live bar.

``mimic train`` runs as a stage runs under Slurm or with ``2> file``: its stderr is a file. That
file and the ``--log`` file must hold no carriage return and one progress line every ``every``
steps (about 5% of the run) plus the last one. On a terminal the bar is drawn and the periodic
lines go to the log file only.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from mimic.cli import main
from mimic.io.logs import Progress, progress, setup_logging

REPO = Path(__file__).resolve().parents[1]
TASK, MODEL = "shapes-vqa", "mini-idefics2"
def raw(path: Path) -> str:
    """The file's text with carriage returns kept (text mode would turn them into newlines)."""
    return path.read_bytes().decode()


LINE = re.compile(r"train mimic: (\d+)/(\d+) \(\d+%\) [\d.]+ it/s elapsed \d+:\d\d( eta \d+:\d\d)? loss=")


def test_a_training_run_with_stderr_in_a_file_logs_periodic_lines_and_no_frames(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"][MODEL]["path"] = str(REPO / "models" / MODEL)
    params["run"].update(models=[MODEL], tasks=[TASK], untrained=["zero-shot"], trained=["mimic"])
    params["tasks"][TASK].update(n_train=8, n_support=16, n_eval=4)
    params["icd"].update(shots=4, draws=1, embedding=None)
    params["teacher"]["mode"] = "online"  # no extraction stage needed
    params["methods"]["mimic"]["train"].update(epochs=11, batch_size=2)  # 4 steps per epoch, 44 in all
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for argv in (("prepare", "--task", TASK), ("sample-icd", "--task", TASK)):
        assert main([*argv, "--params", "params.yaml"]) == 0
    log = tmp_path / "train.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "w") as stderr:  # what Slurm's output file or `2> file` receives
        done = subprocess.run([sys.executable, "-m", "mimic.cli", "train", "--params", "params.yaml", "--model", MODEL,
                               "--task", TASK, "--method", "mimic", "--log", str(log)],
                              stdout=subprocess.DEVNULL, stderr=stderr, env=env, timeout=600)
    captured = raw(tmp_path / "stderr.txt")
    assert done.returncode == 0, captured[-3000:]
    total, every = 44, math.ceil(44 / 20)
    want = [*range(every, total, every), total]
    for text in (raw(log), captured):
        assert "\r" not in text
        steps = [int(m.group(1)) for m in LINE.finditer(text)]
        assert steps == want, steps
        assert all(int(m.group(2)) == total for m in LINE.finditer(text))
    assert "Loading weights" not in captured  # transformers' own bar is off too


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_bar_is_live_and_the_lines_go_to_the_log_file_only(tmp_path, monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    log = setup_logging(str(tmp_path / "stage.log"), "mimic.test")
    try:
        bar = Progress(total=10, desc="work", logger=log, every=4)
        for _ in range(10):
            bar.update(1)
            bar.set_postfix(loss="0.5")
        bar.close()
        log.info("done")
    finally:
        for handler in list(logging.getLogger("mimic").handlers):
            handler.close()
            logging.getLogger("mimic").removeHandler(handler)
    screen = terminal.getvalue()
    assert "\r" in screen and "10/10" in screen  # tqdm drew the bar on the terminal
    assert not re.search(r"work: \d+/10 \(", screen) and "done" in screen  # no periodic lines over the bar
    lines = [line for line in (tmp_path / "stage.log").read_text().splitlines() if "work: " in line]
    assert [re.search(r"work: (\d+)/10", line).group(1) for line in lines] == ["4", "8", "10"]
    assert lines[-1].endswith("loss=0.5") and "\r" not in raw(tmp_path / "stage.log")


def test_iterating_logs_the_end_even_when_every_does_not_divide_the_total(caplog):
    caplog.set_level(logging.INFO, logger="mimic.iter")
    seen = list(progress(range(7), desc="batches", logger=logging.getLogger("mimic.iter"), every=3))
    assert seen == list(range(7))
    done = [re.search(r"batches: (\d+)/7", r.getMessage()).group(1) for r in caplog.records]
    assert done == ["3", "6", "7"]
