"""Adapters that call a user's scoring class in its own convention (see API.md contracts).

Each adapter turns one ``Call`` (what a protocol endpoint read from the request) into
the call its convention expects: our ``Model``, Seldon ``Model.py``, UbiOps
``Deployment``, a BudgetML predictor, or an MLflow pyfunc model.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread

from serving_cell.settings import CellSettings


@dataclass
class Call:
    """One prediction as a protocol endpoint hands it over."""

    inputs: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=list)
    """Column names, when the protocol carries them (Seldon ``data.names``)."""
    request: Any = None
    """The HTTP request (a Starlette ``Request``); BudgetML predictors are given it."""
    argument: Any = None
    """What a BudgetML predictor is given instead of the request, as BudgetML's own
    server gives it: ``/predict_dict``'s payload, ``/predict_image``'s uploaded file."""


class MissingMethod(TypeError):
    """The scoring class lacks a method its convention needs."""


async def call_maybe_async(
    fn: Any, *args: Any, abandon_on_cancel: bool = False, **kwargs: Any
) -> Any:
    """Await an async function on the loop; run a sync one in the thread pool.

    Sync scoring code must not block the event loop, or health checks would stall.
    ``abandon_on_cancel`` lets shutdown proceed while a slow load() still runs.
    """
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    work = partial(fn, *args, **kwargs)
    result = await anyio.to_thread.run_sync(work, abandon_on_cancel=abandon_on_cancel)
    if inspect.isawaitable(result):
        result = await result
    return result


def _parameters(fn: Any) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and C extensions have no signature
        return []


def _positional(fn: Any) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in _parameters(fn) if p.kind in kinds]


def accepted_kwargs(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``fn`` can take, so extras never cause a TypeError."""
    params = _parameters(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(kwargs)
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return {k: v for k, v in kwargs.items() if k in names}


class Adapter:
    """Builds the user's object, runs its ``load()`` and calls its predict method."""

    contract = ""
    predict_method = "predict"
    signature_hint = "predict(inputs, **kwargs)"

    def __init__(self, cls: type | None, settings: CellSettings, label: str) -> None:
        self.cls = cls
        self.settings = settings
        self.label = label
        """How to name the script in messages, e.g. ``score.py:Model``."""
        self.instance: Any = None

    @property
    def model_dir(self) -> str:
        return str(self.settings.model_dir)

    def construct(self) -> Any:
        assert self.cls is not None
        return self.cls(**self.settings.parameters)

    async def load(self) -> None:
        """Construct (in a thread: constructors often load weights) then call load()."""
        self.instance = await anyio.to_thread.run_sync(self.construct, abandon_on_cancel=True)
        if not callable(getattr(self.instance, self.predict_method, None)):
            raise MissingMethod(
                f"{self.label} has no {self.predict_method}() method; the {self.contract!r} "
                f"contract needs {self.signature_hint}"
            )
        loader = getattr(self.instance, "load", None)
        if callable(loader):
            await call_maybe_async(loader, abandon_on_cancel=True)

    async def predict(self, call: Call) -> Any:
        raise NotImplementedError


class ModelAdapter(Adapter):
    """This project's contract: ``Model(model_dir, **parameters)``, ``predict(inputs, **kw)``."""

    contract = "model"

    def construct(self) -> Any:
        assert self.cls is not None
        # A Model whose __init__ takes no folder still works: it just isn't given one.
        # (A class's signature is its __init__'s without self; object's is empty.)
        if _positional(self.cls):
            return self.cls(self.model_dir, **self.settings.parameters)
        return self.cls(**self.settings.parameters)

    async def predict(self, call: Call) -> Any:
        fn = self.instance.predict
        return await call_maybe_async(fn, call.inputs, **accepted_kwargs(fn, call.kwargs))


class SeldonAdapter(Adapter):
    """Seldon / PrimeHub ``Model.py``: ``Model(**parameters)`` with ``model_uri`` set."""

    contract = "seldon"
    signature_hint = "predict(features, feature_names, **kwargs)"

    def construct(self) -> Any:
        assert self.cls is not None
        params = self.settings.parameters
        # The class's own signature: a class without an __init__ of its own shows none
        # (object.__init__'s **kwargs would suggest it takes any, which it does not).
        takes_uri = bool(accepted_kwargs(self.cls, {"model_uri": 1}))
        if "model_uri" not in params and takes_uri:
            params["model_uri"] = self.model_dir
        instance = self.cls(**params)
        if not getattr(instance, "model_uri", None):
            instance.model_uri = self.model_dir  # read by load(), which runs next
        return instance

    @property
    def class_names(self) -> list[str] | None:
        names = getattr(self.instance, "class_names", None)
        return list(names) if names else None

    async def predict(self, call: Call) -> Any:
        fn = self.instance.predict
        args: list[Any] = [call.inputs]
        if len(_positional(fn)) >= 2:  # bound method: self is not listed
            args.append(call.feature_names)
        return await call_maybe_async(fn, *args, **accepted_kwargs(fn, call.kwargs))


class UbiOpsAdapter(Adapter):
    """UbiOps ``Deployment(base_directory, context)`` with ``request(data)``."""

    contract = "ubiops"
    predict_method = "request"
    signature_hint = "request(data)"

    def context(self) -> dict[str, Any]:
        s = self.settings
        return {
            "deployment": s.model_name,
            "version": s.model_version,
            "input_fields": s.input_spec or [],
            "output_fields": s.output_spec or [],
            "environment_variables": dict(s.metadata.get("env") or {}),
        }

    def construct(self) -> Any:
        assert self.cls is not None
        return self.cls(self.model_dir, self.context())

    async def predict(self, call: Call) -> Any:
        fn = self.instance.request
        with ExitStack() as stack:
            data = self._files_as_paths(call.inputs, stack)
            args = [data, self.context()] if len(_positional(fn)) >= 2 else [data]
            result = await call_maybe_async(fn, *args)
        return self._paths_as_files(result)

    def _files_as_paths(self, data: Any, stack: ExitStack) -> Any:
        """UbiOps hands file fields to request() as paths to local files."""
        if not isinstance(data, dict):
            return data
        converted = dict(data)
        for name, value in data.items():
            if isinstance(value, bytes):
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cell-"))
                path = Path(folder) / name
                path.write_bytes(value)
                converted[name] = str(path)
        return converted

    def _paths_as_files(self, result: Any) -> Any:
        """File outputs come back as paths; answer their bytes instead."""
        spec = self.settings.output_spec or []
        file_fields = {f["name"] for f in spec if f.get("data_type") == "file"}
        if not isinstance(result, dict) or not file_fields:
            return result
        return {
            k: Path(v).read_bytes() if k in file_fields and isinstance(v, str | os.PathLike) else v
            for k, v in result.items()
        }


class BudgetMLAdapter(Adapter):
    """BudgetML: a predictor with ``load()`` and ``async predict(request)``."""

    contract = "budgetml"
    signature_hint = "async predict(request)"

    async def predict(self, call: Call) -> Any:
        given = call.request if call.argument is None else call.argument
        return await call_maybe_async(self.instance.predict, given)


class MLflowAdapter(Adapter):
    """An MLflow model folder, loaded with its pyfunc flavour."""

    contract = "mlflow"

    def construct(self) -> Any:
        import mlflow.pyfunc  # lazily: only MLmodel packages need mlflow installed

        return mlflow.pyfunc.load_model(self.model_dir)

    async def predict(self, call: Call) -> Any:
        data = to_pyfunc_input(call.inputs)
        params = call.kwargs.get("params")
        kwargs = {"params": params} if params else {}  # older pyfunc models take no params
        return await call_maybe_async(self.instance.predict, data, **kwargs)


def to_pyfunc_input(inputs: Any) -> Any:
    """What pyfunc expects: a DataFrame for named columns, a numpy array otherwise."""
    import numpy as np
    import pandas as pd

    if isinstance(inputs, pd.DataFrame | np.ndarray):
        return inputs
    if isinstance(inputs, dict):
        if not any(isinstance(v, list | tuple | np.ndarray) for v in inputs.values()):
            return pd.DataFrame([inputs])  # one record
        columns = {k: np.asarray(v) for k, v in inputs.items()}
        return pd.DataFrame({k: v if v.ndim <= 1 else list(v) for k, v in columns.items()})
    if isinstance(inputs, list) and inputs and all(isinstance(row, dict) for row in inputs):
        return pd.DataFrame(inputs)
    return np.asarray(inputs)


ADAPTERS: dict[str, type[Adapter]] = {
    cls.contract: cls
    for cls in (ModelAdapter, SeldonAdapter, UbiOpsAdapter, BudgetMLAdapter, MLflowAdapter)
}


def infer_contract(cls: type) -> str:
    """The convention of an explicitly named class, read from its methods' signatures."""
    predict = getattr(cls, "predict", None)
    if predict is None and callable(getattr(cls, "request", None)):
        return "ubiops"
    if predict is None:
        return "model"  # fails at load with a message naming predict()
    params = _positional(predict)[1:]  # unbound: drop self
    if inspect.iscoroutinefunction(predict) and params and params[0].name in ("request", "req"):
        return "budgetml"
    if len(params) >= 2 and params[1].name in ("feature_names", "features_names", "names"):
        return "seldon"
    return "model"
