"""A keyword sentiment scorer with no dependencies: the smallest complete score.py."""

import json
import os

POSITIVE = {"good", "great", "lovely", "excellent", "happy", "love", "nice", "fine"}
NEGATIVE = {"bad", "awful", "terrible", "sad", "hate", "poor", "horrible", "broken"}


class Model:
    def __init__(self, model_dir, threshold=0.0):
        # model_dir is this deployment's folder; parameters come from metadata.json.
        self.model_dir = model_dir
        self.threshold = float(threshold)
        self.positive, self.negative = set(POSITIVE), set(NEGATIVE)

    def load(self):
        # Optional extra words shipped next to the script.
        extra = os.path.join(self.model_dir, "words.json")
        if os.path.exists(extra):
            with open(extra, encoding="utf-8") as f:
                words = json.load(f)
            self.positive |= set(words.get("positive", []))
            self.negative |= set(words.get("negative", []))
        print(f"loaded {len(self.positive)} positive and {len(self.negative)} negative words")

    def predict(self, inputs, **kwargs):
        words = [w.strip(".,!?;:").lower() for w in inputs["text"].split()]
        hits = sum(w in self.positive for w in words) - sum(w in self.negative for w in words)
        score = hits / max(len(words), 1)
        return {"label": "positive" if score > self.threshold else "negative", "score": score}
