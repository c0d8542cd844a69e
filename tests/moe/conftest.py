"""MoE tests run torch single-threaded: tiny tensors gain nothing from threads, and on a loaded machine
every parallel region can wait a whole scheduler time slice for its second thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
