"""Streams tokens as they are made: predict() returns a generator, and the cell sends each
item as soon as it is yielded (JSON lines, or server-sent events for text/event-stream)."""

import re
import time


class Model:
    def __init__(self, model_dir, delay=0.0, max_tokens=256):
        # delay: seconds between tokens, to watch them arrive one by one with curl -N
        self.delay = float(delay)
        self.max_tokens = int(max_tokens)

    def load(self):
        # A real model loads its weights here; this one splits words and punctuation.
        self.token = re.compile(r"\w+|[^\w\s]")

    def predict(self, inputs, **kwargs):
        tokens = self.token.findall(inputs["text"])[: self.max_tokens]

        def stream():
            for index, token in enumerate(tokens):
                if self.delay:
                    time.sleep(self.delay)  # a sync generator runs in a worker thread
                yield {"index": index, "token": token}
            yield {"done": True, "tokens": len(tokens)}

        return stream()
