"""Tiny scoring packages, one per behaviour. Each behaves the same in a real cell (its
script really does it) and on the fake runtime (``parameters.fake`` says it)."""

from __future__ import annotations

from typing import Any

GOOD = b"""
class Model:
    def __init__(self, model_dir, **parameters):
        self.tag = parameters.get("tag", "v?")

    def load(self):
        self.ready = True

    def predict(self, inputs, **kwargs):
        return {"echo": inputs, "tag": self.tag}
"""

FAILS_IN_LOAD = b"""
class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        raise ValueError("weights are corrupt")

    def predict(self, inputs, **kwargs):
        return inputs
"""

EXITS = b"""
import os


class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        print("ImportError: no module named torch", flush=True)
        os._exit(3)

    def predict(self, inputs, **kwargs):
        return inputs
"""

SLOW = b"""
import time


class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        time.sleep(3600)

    def predict(self, inputs, **kwargs):
        return inputs
"""

USES_LIBRARY = b"""
import dstiny


class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        return {"value": dstiny.VALUE}
"""

SLOWISH = b"""
import time


class Model:
    def __init__(self, model_dir, **parameters):
        self.delay = float(parameters.get("delay", 3))

    def load(self):
        time.sleep(self.delay)

    def predict(self, inputs, **kwargs):
        return inputs
"""

SIZER = b'''
class Model:
    """Answers the size of what it was sent: raw bytes, or a JSON value's repr."""

    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        if isinstance(inputs, (bytes, bytearray)):
            return {"size": len(inputs)}
        if isinstance(inputs, dict) and "answer_bytes" in inputs:
            return {"blob": "x" * int(inputs["answer_bytes"])}
        return {"size": len(repr(inputs))}
'''

RAISES_IN_PREDICT = b"""
class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        raise RuntimeError("cannot score negative petals")
"""

SCRIPTS = {
    "good": GOOD,
    "sizer": SIZER,
    "raises": RAISES_IN_PREDICT,
    "library": USES_LIBRARY,
    "slowish": SLOWISH,
    "fail": FAILS_IN_LOAD,
    "exit": EXITS,
    "slow": SLOW,
}


def package(behaviour: str, model: str, **meta: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(metadata, files) of a package that behaves as ``behaviour``."""
    parameters = dict(meta.pop("parameters", {}))
    if behaviour in ("fail", "exit", "slow"):
        parameters["fake"] = behaviour
    return {"model": model, "parameters": parameters, **meta}, {"score.py": SCRIPTS[behaviour]}
