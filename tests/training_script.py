"""``scripts/train_lending_club.py`` as a module, for the tests of its code (ROC AUC, training)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_lending_club.py"


@cache
def training_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_lending_club", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
