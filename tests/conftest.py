"""Shared test fixtures: the real data in ../shared, loopback-only networking helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test with a clear reason when the folder is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data missing: {path} (CI has ../shared beside the checkout)")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    # Tests talk to loopback only; a proxy from the environment must never be involved.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
