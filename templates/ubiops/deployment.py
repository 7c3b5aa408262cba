"""A UbiOps style deployment.py: summary statistics of a list of numbers."""

import json
import os
import statistics


class Deployment:
    def __init__(self, base_directory, context):
        # UbiOps loads everything in __init__; base_directory is the deployment's folder.
        print(f"Initialising deployment {context.get('deployment')}")
        with open(os.path.join(base_directory, "config.json"), encoding="utf-8") as f:
            self.config = json.load(f)

    def request(self, data):
        numbers = data["numbers"]
        if not numbers:
            raise ValueError("numbers must not be empty")
        digits = self.config["round_to"]
        return {
            "count": len(numbers),
            "mean": round(statistics.fmean(numbers), digits),
            "stdev": round(statistics.pstdev(numbers), digits),
        }
