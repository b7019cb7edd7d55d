"""Test-wide settings: no network, temporary Hugging Face caches, one torch thread per worker."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports huggingface_hub / datasets, so an accidental download fails fast.
_CACHE = tempfile.mkdtemp(prefix="remask-test-hf-")
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": os.path.join(_CACHE, "home"),
        "HF_DATASETS_CACHE": os.path.join(_CACHE, "datasets"),
        "HF_MODULES_CACHE": os.path.join(_CACHE, "modules"),
        "TOKENIZERS_PARALLELISM": "false",
    }
)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test sees a registry built from the installed entry points (and may add to it)."""
    from remask.registry import reset_registry

    monkeypatch.delenv("REMASK_PLUGINS", raising=False)
    monkeypatch.delenv("REMASK_DISABLE_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()
