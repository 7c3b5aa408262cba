"""Train the iris classifier and save it as an MLflow model in ./model (or argv[1])."""

import shutil
import sys
from pathlib import Path

import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main(out_dir: Path) -> Path:
    frame = load_iris(as_frame=True)
    X = frame.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    model = LogisticRegression(max_iter=1000).fit(X, frame.target)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # save_model refuses to overwrite
    # The signature names the columns, so requests may send them in any order.
    signature = infer_signature(X, model.predict(X))
    mlflow.sklearn.save_model(model, str(out_dir), signature=signature, input_example=X[:2])
    return out_dir


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "model"))
