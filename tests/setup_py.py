"""What setup.py hands to ``setup()``, read by running it with ``setup`` replaced (nothing is built)."""

from __future__ import annotations

import runpy
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]


def setup_arguments() -> dict:
    captured: dict = {}
    with mock.patch("setuptools.setup", side_effect=lambda **kwargs: captured.update(kwargs)):
        runpy.run_path(str(REPO / "setup.py"))
    return captured
