import pytest
import torch

from mimic.tiny import tiny_idefics, tiny_idefics2, tiny_idefics3

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
