import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mimic.tiny.models import tiny_idefics, tiny_idefics2, tiny_idefics3


class FakeClock:
    """A stand-in for the ``time`` module of mimic.training.loop: each ``time()`` call advances 1/16 s, so
    logged seconds and rates are exact."""

    def __init__(self):
        self.now = 0.0

    def time(self) -> float:
        self.now += 0.0625
        return self.now


@pytest.fixture
def fake_training_clock(monkeypatch) -> FakeClock:
    """mimic.training.loop's clock replaced by a :class:`FakeClock`."""
    import mimic.training.loop as training

    clock = FakeClock()
    monkeypatch.setattr(training, "time", clock)
    return clock


BUILDERS = {
    "idefics": tiny_idefics,
    "idefics2": tiny_idefics2,
    "idefics2-sliding": lambda: tiny_idefics2(sliding_window=6),
    "idefics3": tiny_idefics3,
}


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=sorted(BUILDERS))
def tiny_model(request):
    return BUILDERS[request.param]()


def mini_vqa_setup(root):
    """The miniature model (random weights, seed 1) and a tiny synthetic colour-VQA task prepared under
    ``root``, with 2 draws of 2 demonstrations per query: ``(loaded, TaskData, icd)``."""
    from mimic.data.batches import TaskData
    from mimic.data.icd import sample_icds
    from mimic.data.loaders import prepare_task
    from mimic.data.schema import SPLITS, read_table
    from mimic.models.adapters import adapter_for
    from mimic.models.loading import LoadedModel
    from mimic.models.prompts import PromptFormat
    from mimic.tiny.mini.build import build_model, build_processor, build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, seed=1).eval()
    loaded = LoadedModel("mini", model, build_processor(tok), adapter_for(model), PromptFormat(),
                         torch.device("cpu"), [tok.eos_token_id], tok.pad_token_id)
    spec = {"name": "t", "loader": "synthetic", "kind": "vqa", "attribute": "color", "n_train": 6,
            "n_support": 10, "n_eval": 4}
    prepare_task(spec, root / "data", seed=0)
    tables = {s: read_table(root / "data" / f"{s}.parquet") for s in SPLITS}
    icd = sample_icds("t", tables["train"], tables["support"], tables["eval"], shots=2, draws=2, seed=0)
    return loaded, TaskData("vqa", tables), icd


@pytest.fixture
def mini_vqa(tmp_path):
    """:func:`mini_vqa_setup` under this test's ``tmp_path`` (a fresh model: training attaches to it)."""
    return mini_vqa_setup(tmp_path)


@pytest.fixture(scope="module")
def mini_vqa_module(tmp_path_factory):
    """:func:`mini_vqa_setup` shared by one test module (for tests that leave the model as they found it)."""
    return mini_vqa_setup(tmp_path_factory.mktemp("mini_vqa"))


class RepositoryNotFoundError(Exception):
    """Stands for huggingface_hub's error of the same name (a multi-line message)."""


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """The Hub as a folder: create_repo / upload_folder copy into it, snapshot_download reads from it."""
    import huggingface_hub

    hub, calls = tmp_path / "hub", []

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))
            (hub / repo_id).mkdir(parents=True, exist_ok=exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message=None):
            calls.append(("upload_folder", repo_id, commit_message))
            shutil.copytree(folder_path, hub / repo_id, dirs_exist_ok=True)

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append(("snapshot_download", repo_id, revision, tuple(allow_patterns)))
        if not (hub / repo_id).is_dir():
            raise RepositoryNotFoundError(f"404 Client Error.\n\nRepository Not Found for {repo_id}")
        return str(hub / repo_id)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return hub, calls


REPO = Path(__file__).resolve().parents[1]


def _pipeline_copy(root: Path, params: dict, model: str = "mini-idefics2") -> Path:
    """A runnable copy of the pipeline under ``root``: workflow/, dvc.yaml, .dvcignore, the shipped ``model``
    and ``params`` as params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("workflow", "dvc.yaml", ".dvcignore"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    shutil.copytree(REPO / "models" / model, root / "models" / model)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _snakemake_all(root: Path, timeout: int) -> None:
    """``snakemake --cores 2 all`` in ``root`` with this interpreter's ``mimic`` on PATH; it must succeed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="session")
def pipeline_copy():
    """``pipeline_copy(root, params, model=...)``: a runnable copy of the pipeline (see :func:`_pipeline_copy`)."""
    return _pipeline_copy


@pytest.fixture(scope="session")
def snakemake_all():
    """``snakemake_all(root, timeout)``: the whole pipeline in a copy, which must succeed."""
    return _snakemake_all
