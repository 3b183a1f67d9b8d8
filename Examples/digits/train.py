"""Trains the `digits` example's classifier, once; its output is committed, so nothing here runs in CI.

A multinomial logistic regression on scikit-learn's bundled 8x8 handwritten digits (1797 images, pixel values
0..16), trained on 80% and scored on the held-out 20%. Inputs are scaled to 0..1 (pixel / 16), which is what the
Swift `normalize` step does. Writes:
- Sources/Examples/Resources/digits-model.json: {"classes", "weights" (10 x 64), "biases" (10), "accuracy"}
- Examples/digits/samples.json: 20 held-out images with their labels and scikit-learn's
  predicted probabilities, which the Swift tests must reproduce.

usage: python3 Examples/digits/train.py   (needs: pip install scikit-learn)
"""
import json
import pathlib

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

root = pathlib.Path(__file__).resolve().parents[2]
resources = root / "Sources" / "Examples" / "Resources"

digits = load_digits()
x = digits.data / 16.0
train_x, test_x, train_y, test_y, _, test_raw = train_test_split(
    x, digits.target, digits.data, test_size=0.2, random_state=7, stratify=digits.target)
model = LogisticRegression(max_iter=2000, C=1.0)
model.fit(train_x, train_y)
accuracy = float(model.score(test_x, test_y))

model_json = {
    "classes": [int(c) for c in model.classes_],
    "weights": [[round(float(w), 6) for w in row] for row in model.coef_],
    "biases": [round(float(b), 6) for b in model.intercept_],
    "accuracy": round(accuracy, 4),
    "trained_on": "sklearn.datasets.load_digits, 80% stratified split, random_state=7",
}
(resources / "digits-model.json").write_text(json.dumps(model_json, separators=(",", ":")) + "\n")

# Probabilities from the rounded weights, as the Swift code will compute them.
import math
samples = []
for pixels, label in list(zip(test_raw, test_y))[:20]:
    scaled = [p / 16.0 for p in pixels]
    scores = [sum(w * v for w, v in zip(row, scaled)) + b
              for row, b in zip(model_json["weights"], model_json["biases"])]
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    samples.append({"pixels": [int(p) for p in pixels], "label": int(label),
                    "probabilities": [e / total for e in exps]})
(root / "Examples" / "digits" / "samples.json").write_text(json.dumps(samples, separators=(",", ":")) + "\n")
print(f"held-out accuracy {accuracy:.4f}; wrote {resources}")
