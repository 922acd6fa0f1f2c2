"""Shared test setup: a non-interactive matplotlib backend, no figure left open between tests, and the
``one_thread`` fixture for modules that run many tiny networks."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    plt.close("all")
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op PyTorch thread for a module: tiny tensors gain nothing from more, and on a small, shared CPU
    the threads' synchronisation costs a lot. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
