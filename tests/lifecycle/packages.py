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

STREAMER = b'''
from starlette.responses import StreamingResponse

BLOCK = 64 * 1024
PATTERN = bytes(range(256)) * (BLOCK // 256)


class Model:
    """Streams an answer of ``answer_bytes`` with no length announced: a JSON document
    whose blob has that many bytes, the same but cut short ("broken"), or raw bytes."""

    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        size, kind = int(inputs["answer_bytes"]), inputs.get("kind", "json")

        def blocks(filler):
            left = size
            while left > 0:
                yield filler[: min(BLOCK, left)]
                left -= BLOCK

        if kind == "raw":
            media_type = inputs.get("media_type", "application/octet-stream")
            return StreamingResponse(blocks(PATTERN), media_type=media_type)

        def document():
            yield b'{"predictions": {"blob": "'
            yield from blocks(b"y" * BLOCK)
            if kind != "broken":
                yield b'"}}'

        return StreamingResponse(document(), media_type="application/json")
'''

BATCHED = b'''
import time


class Model:
    """Takes batches (metadata "batching"): a list of inputs in, one answer per input
    out, each telling the size of its batch. Its first batch takes ``first_delay`` s."""

    def __init__(self, model_dir, **parameters):
        self.first_delay = float(parameters.get("first_delay", 0))
        self.calls = 0

    def predict(self, batch, **kwargs):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.first_delay)
        return [{"echo": x, "batch": len(batch)} for x in batch]
'''

WHOAMI = b"""
import os
import socket
import time


class Model:
    # answers which process answered (each replica is one of its own), after sleeping
    # inputs["sleep"] seconds when asked to; inputs["die"]: the replica dies holding it

    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        if isinstance(inputs, dict) and inputs.get("die"):
            os._exit(1)
        if isinstance(inputs, dict) and inputs.get("sleep"):
            time.sleep(float(inputs["sleep"]))
        return {"cell": f"{socket.gethostname()}:{os.getpid()}"}
"""

SCRIPTS = {
    "whoami": WHOAMI,
    "good": GOOD,
    "batched": BATCHED,
    "sizer": SIZER,
    "streamer": STREAMER,
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
