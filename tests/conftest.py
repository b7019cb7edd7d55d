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
# one torch thread per test process (and per subprocess it starts): the engine's default would be
# every core, which oversubscribes a 2-core CI machine running `pytest -n 2`
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def official(request):
    """Load a reference-implementation fixture, ``<test dir>/fixtures/<name>_fixture.json`` (numbers
    from the named code at a named commit, kept by the algorithm-zoo tests)."""
    fixtures = request.path.parent / "fixtures"

    def load(name: str) -> dict:
        import json

        return json.loads((fixtures / f"{name}_fixture.json").read_text())

    return load


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test sees a registry built from the installed entry points (and may add to it)."""
    from remask.registry import reset_registry

    monkeypatch.delenv("REMASK_PLUGINS", raising=False)
    monkeypatch.delenv("REMASK_DISABLE_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many code-sandbox tests did not run and why: without bubblewrap the sandbox cannot
    start, and a green run would otherwise hide that a whole part of remask went untested."""
    skipped = terminalreporter.stats.get("skipped", [])
    sandbox = [r for r in skipped if "bubblewrap" in _skip_reason(r) or "bwrap" in _skip_reason(r)]
    if sandbox:
        terminalreporter.write_sep(
            "-", f"{len(sandbox)} code-sandbox tests skipped: {_skip_reason(sandbox[0])}; "
            "install it (apt-get install bubblewrap, as .ci/run does) to run the full suite", yellow=True)
