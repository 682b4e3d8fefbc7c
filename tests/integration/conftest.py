"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium for the browser tests (Playwright drives it; no browser download). Missing
    under CI is a failure, not a skip: .ci/run installs it."""
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM
