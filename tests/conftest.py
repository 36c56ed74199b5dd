import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the test process runs with the OpenMP settings of the `sftlab` command's processes (GOMP_SPINCOUNT,
# set before torch loads), so in-process runs and `sftlab train` subprocesses calibrate
# train.speed.cpu_matmul alike (tests compare their bits)
from sftlab.speed import configure_openmp  # noqa: E402

configure_openmp()

from tiny import make_model, make_tokenizer  # noqa: E402


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_model():
    return make_model()
