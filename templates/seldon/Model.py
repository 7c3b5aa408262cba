"""A Seldon / PrimeHub style Model.py: iris species by distance to each class's centroid."""

import json
import math
import os

# Per-class means of the iris measurements; centroids.json in model_uri may replace them.
CENTROIDS = {
    "setosa": [5.006, 3.428, 1.462, 0.246],
    "versicolor": [5.936, 2.770, 4.260, 1.326],
    "virginica": [6.588, 2.974, 5.552, 2.026],
}


class Model:
    def __init__(self, model_uri=None, temperature=1.0):
        # The cell sets model_uri to the deployment's folder, as Seldon mounts /mnt/models.
        self.model_uri = model_uri
        self.temperature = float(temperature)
        self.centroids = dict(CENTROIDS)
        self.class_names = list(self.centroids)  # Seldon answers use them as data.names

    def load(self):
        path = os.path.join(self.model_uri or ".", "centroids.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.centroids = json.load(f)
            self.class_names = list(self.centroids)

    def predict(self, features, feature_names, **kwargs):
        rows = features.tolist() if hasattr(features, "tolist") else features
        return [self._probabilities(row) for row in rows]

    def _probabilities(self, row):
        scores = [-math.dist(row, c) / self.temperature for c in self.centroids.values()]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        return [round(w / sum(weights), 4) for w in weights]
