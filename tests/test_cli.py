import os
import re
import subprocess
import sys
from pathlib import Path

from mimic.cli import main


def test_info_prints_the_idefics2_8b_parameter_count(capsys):
    assert main(["info", "--model", "idefics2-8b-base"]) == 0
    out = capsys.readouterr().out
    assert "32 layers x 32 heads x head_dim 128" in out
    assert "total=  263,168" in out  # v 131,072 + log-Z1 linears 132,096
    assert re.search(r"^  live +trained= +131,104 +fitted= +0$", out, re.M)  # 32 x (4096 + 1 scale)


def test_info_reads_a_local_model_config(tmp_path, capsys):
    from mimic.tiny.models import tiny_idefics3

    tiny_idefics3(layers=3).config.save_pretrained(tmp_path)
    assert main(["info", "--model", str(tmp_path)]) == 0
    # 3 layers x 4 heads x 8: v = 96, w = 96, b = 12
    assert "total=      204" in capsys.readouterr().out


# -- expected failures: one line, exit status 2; --debug shows the traceback --------------------

REPO = Path(__file__).resolve().parents[1]


def bad_params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("      lr: 5.0e-2 ", "      lr: fast "))
    return path


def test_an_expected_failure_is_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "train.log"
    code = main(["train", "--params", str(bad_params(tmp_path)), "--model", "mini-idefics2", "--task",
                 "shapes-vqa", "--method", "mimic", "--log", str(log)])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    expected = f"mimic train: error: {tmp_path}/params.yaml: methods.mimic.train.lr = 'fast': must be a number"
    assert err == [expected]
    assert log.read_text().rstrip().endswith("error: " + expected.split("error: ", 1)[1])  # also in the log


def test_a_missing_input_names_the_file_and_the_command_that_makes_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert main(["sample-icd", "--params", "params.yaml", "--task", "shapes-vqa"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == ("mimic sample-icd: error: data/shapes-vqa/seed-0/train.parquet is missing: run `mimic prepare` "
                    "for this task first")


def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    plain = subprocess.run(["mimic", "validate", "--params", str(bad_params(tmp_path))], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    debug = subprocess.run(["mimic", "--debug", "validate", "--params", str(bad_params(tmp_path))], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("mimic validate: error: ")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "mimic.pipeline.params.ParamsError: " in debug.stderr
