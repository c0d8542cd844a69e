"""Shared test settings: quiet progress bars, and torch on one thread for every test.

Test tensors are tiny: threads gain nothing, and on a loaded machine every parallel region can wait a
whole scheduler time slice for its second thread. A test that needs more threads sets them itself.
"""

import os

import pytest
import torch

os.environ.setdefault("MOEPLACE_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run the test with one torch thread and restore the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
