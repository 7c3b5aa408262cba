"""Find a package's scoring entrypoint by reading its files, never by importing them.

Used by the server at upload time (to refuse a package with no scoring script) and by
the cell at start-up; pure standard library so both sides can share it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CONTRACTS = ("mlflow", "model", "seldon", "ubiops", "budgetml", "custom")

EXPECTED = (
    "an MLflow model (an 'MLmodel' file), 'score.py' with class Model, "
    "'Model.py' with class Model (Seldon style), 'deployment.py' with class Deployment "
    "(UbiOps style), a .py file with a class having load() and async predict(request) "
    "(BudgetML style), or an explicit 'entrypoint' of the form 'path/to/file.py:ClassName'"
)


class EntrypointError(ValueError):
    """The package has no usable scoring entrypoint; the message says what was expected."""


@dataclass(frozen=True)
class Entrypoint:
    contract: str
    """One of CONTRACTS: which calling convention the cell uses."""
    file: str
    """Path of the script relative to the model folder (posix); "MLmodel" for mlflow."""
    class_name: str
    """The scoring class in ``file``; empty for mlflow."""

    def __str__(self) -> str:
        return self.file if self.contract == "mlflow" else f"{self.file}:{self.class_name}"


def _classes(path: Path) -> dict[str, ast.ClassDef]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError) as exc:
        raise EntrypointError(f"{path.name} is not valid Python: {exc}") from exc
    except (RecursionError, MemoryError) as exc:
        raise EntrypointError(f"{path.name} is nested too deeply to read") from exc
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _methods(cls: ast.ClassDef) -> dict[str, bool]:
    """Method name -> whether it is ``async def``."""
    found: dict[str, bool] = {}
    for node in cls.body:
        if isinstance(node, ast.AsyncFunctionDef):
            found[node.name] = True
        elif isinstance(node, ast.FunctionDef):
            found[node.name] = False
    return found


def parse_entrypoint(value: str) -> tuple[str, str]:
    """Split ``"path/to/file.py:ClassName"``; raise EntrypointError on a bad form."""
    file, sep, class_name = value.rpartition(":")
    if not sep or not file.endswith(".py") or not class_name.isidentifier():
        raise EntrypointError(f"entrypoint {value!r} must look like 'path/to/file.py:ClassName'")
    pure = PurePosixPath(file)
    if pure.is_absolute() or ".." in pure.parts or "\\" in file:
        raise EntrypointError(f"entrypoint {value!r} must be a relative path inside the package")
    return file, class_name


def check_entrypoint(model_dir: Path, value: str) -> Entrypoint:
    """Check that an explicit entrypoint names an existing file and class."""
    file, class_name = parse_entrypoint(value)
    path = model_dir / file
    if not path.is_file():
        raise EntrypointError(f"entrypoint file {file!r} is not among the uploaded files")
    classes = _classes(path)
    if class_name not in classes:
        raise EntrypointError(f"entrypoint file {file!r} defines no class {class_name!r}")
    return Entrypoint("custom", file, class_name)


def detect_entrypoint(model_dir: Path, explicit: str | None = None) -> Entrypoint:
    """The package's entrypoint, in the detection order of the API contract."""
    if explicit:
        return check_entrypoint(model_dir, explicit)
    if (model_dir / "MLmodel").is_file():
        return Entrypoint("mlflow", "MLmodel", "")
    for file, class_name, contract in (
        ("score.py", "Model", "model"),
        ("Model.py", "Model", "seldon"),
        ("deployment.py", "Deployment", "ubiops"),
    ):
        if (model_dir / file).is_file() and class_name in _classes(model_dir / file):
            return Entrypoint(contract, file, class_name)
    for path in sorted(model_dir.glob("*.py")):
        try:
            classes = _classes(path)
        except EntrypointError:
            continue
        for name, cls in classes.items():
            methods = _methods(cls)
            if "load" in methods and methods.get("predict") is True:
                return Entrypoint("budgetml", path.name, name)
    raise EntrypointError(f"no scoring script found; expected {EXPECTED}")
