"""Find and import the scoring class of a model folder and wrap it in its adapter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from serving_cell.contracts import ADAPTERS, Adapter, infer_contract
from serving_cell.detect import EntrypointError, detect_entrypoint
from serving_cell.settings import CellSettings


def import_script(model_dir: Path, file: str) -> ModuleType:
    """Import ``file`` under its own module name, with its folders on sys.path.

    The real name (``score``, ``Model``) rather than a private one, so that pickles and
    dataclasses that refer to the script's classes by module name keep working; the
    folders go on sys.path so the script can import its sibling modules.
    """
    path = (model_dir / file).resolve()
    for folder in {str(model_dir.resolve()), str(path.parent)}:
        if folder not in sys.path:
            sys.path.insert(0, folder)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EntrypointError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def build_adapter(settings: CellSettings) -> Adapter:
    """The adapter for the folder's entrypoint; importing the script runs its top level."""
    entry = detect_entrypoint(settings.model_dir, settings.explicit_entrypoint)
    if entry.contract == "mlflow":
        return ADAPTERS["mlflow"](None, settings, "MLmodel")
    module = import_script(settings.model_dir, entry.file)
    cls = getattr(module, entry.class_name, None)
    if not isinstance(cls, type):
        raise EntrypointError(f"{entry} is not a class")
    contract = infer_contract(cls) if entry.contract == "custom" else entry.contract
    return ADAPTERS[contract](cls, settings, str(entry))
