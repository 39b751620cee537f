"""Fixtures shared by the test modules (the ComfyUI integration tests have their own conftest)."""

import importlib.abc
import importlib.machinery
import os
import sys

import pytest
import torch


class _BlockTorchaudio(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import torchaudio` fail while the package is still found, as on a machine whose torchaudio is
    installed but does not load beside its torch (an undefined symbol in its extension)."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchaudio" or name.startswith("torchaudio."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is blocked by SINGER_TEST_BLOCK_TORCHAUDIO=1 (it fails to load)")

    def exec_module(self, module):  # never reached: create_module raises
        raise ImportError(module.__name__)


if os.environ.get("SINGER_TEST_BLOCK_TORCHAUDIO") == "1":
    sys.meta_path.insert(0, _BlockTorchaudio())
    for _name in [name for name in sys.modules if name == "torchaudio" or name.startswith("torchaudio.")]:
        del sys.modules[_name]


def pytest_report_header(config):
    if os.environ.get("SINGER_TEST_BLOCK_TORCHAUDIO") == "1":
        return "torchaudio blocked (SINGER_TEST_BLOCK_TORCHAUDIO=1): every `import torchaudio` fails"
    return None


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: on a shared 2-core machine the small convolutions run many
    times faster without thread hand-offs. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
