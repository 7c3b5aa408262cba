"""Serve a scikit-learn model saved with joblib (run train.py first to make it)."""

import os

import joblib
import numpy as np

CLASSES = ["setosa", "versicolor", "virginica"]


class Model:
    def __init__(self, model_dir, model_file="model.joblib"):
        self.path = os.path.join(model_dir, model_file)
        self.model = None

    def load(self):
        self.model = joblib.load(self.path)

    def predict(self, inputs, **kwargs):
        rows = np.asarray(inputs, dtype=float)
        if rows.ndim == 1:  # one row sent on its own
            rows = rows.reshape(1, -1)
        probabilities = self.model.predict_proba(rows)
        return [
            {"label": CLASSES[int(p.argmax())], "probabilities": p.round(4).tolist()}
            for p in probabilities
        ]
