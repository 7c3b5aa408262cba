"""A BudgetML style predictor: load() once, then async predict(request) per request."""

import re


class Predictor:
    def load(self):
        # Called once before the first request; load weights or vocabularies here.
        self.word = re.compile(r"[A-Za-z']+")

    async def predict(self, request):
        # `request` is the HTTP request itself (a Starlette/FastAPI Request): read it
        # the way your endpoint expects, here a JSON body {"text": ...}.
        body = await request.json()
        words = self.word.findall(body["text"])
        return {
            "characters": len(body["text"]),
            "words": len(words),
            "longest": max(words, key=len) if words else None,
        }
