"""A seed-003 plug-in, written to the protocol only (it imports nothing from labelpilot).

Run it with::

    labelpilot loop --input-dir exp_dir/input --output-dir exp_dir/output \
        --model my_model:MyModel --options epochs=1 --options lr=0.1

(with this folder on PYTHONPATH), or register it in your package's ``pyproject.toml``::

    [project.entry-points."labelpilot.plugins"]
    my-model = "my_model:MyModel"

and pass ``--model my-model``. The model is TF-IDF + logistic regression; its hard-example query supports
LeastConfidence, MarginSampling, EntropySampling and RandomSampling.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression


class MyModel:
    def __init__(self):
        self.vectorizer = None
        self.classifier = None
        self.classes = []

    def split_train_val(self, df_init, df_anno, is_first_train, val_size, random_seed):
        """Validation from df_init only, the same rows for the same seed; df_anno joins after round one."""
        df_init = df_init.sort_values("sampleId").reset_index(drop=True)
        if val_size and len(df_init) > 1:
            df_val = df_init.sample(frac=val_size, random_state=random_seed)
            df_train = df_init.drop(df_val.index)
        else:
            df_train, df_val = df_init, None
        if not is_first_train and df_anno is not None and len(df_anno):
            df_train = pd.concat([df_train, df_anno], ignore_index=True)
        return df_train, df_val

    def save_model(self, save_dir):
        os.makedirs(save_dir, exist_ok=True)
        with open(os.path.join(save_dir, "my_model.pkl"), "wb") as fh:
            pickle.dump({"vectorizer": self.vectorizer, "classifier": self.classifier, "classes": self.classes}, fh)

    def load_model(self, model_dir):
        with open(os.path.join(model_dir, "my_model.pkl"), "rb") as fh:
            state = pickle.load(fh)
        self.vectorizer, self.classifier, self.classes = state["vectorizer"], state["classifier"], state["classes"]
        return self

    @staticmethod
    def _texts(df):
        if "text" in df.columns:
            return df["text"].fillna("").tolist()
        out = []
        for path in df["path"]:
            with open(path, encoding="utf-8") as fh:
                out.append(fh.read())
        return out

    def train_model(self, df_train, df_val, work_dir, is_first_train, options):
        c = float(options.get("C", 1.0 / max(float(options.get("lr", 0.25)), 1e-6)))
        # every round refits on all labels so far; the first round also fixes the label set
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        X = self.vectorizer.fit_transform(self._texts(df_train))
        y = df_train["label"].tolist()
        self.classifier = LogisticRegression(C=c, max_iter=int(options.get("epochs", 1)) * 200).fit(X, y)
        self.classes = list(self.classifier.classes_)
        if df_val is not None and len(df_val):
            acc = float(
                np.mean(self.classifier.predict(self.vectorizer.transform(self._texts(df_val))) == df_val["label"])
            )
            with open(os.path.join(work_dir, "val.txt"), "w", encoding="utf-8") as fh:
                fh.write(f"accuracy {acc:.4f}\n")

    def query_hard_example(self, df_img, work_dir, query_cnt, strategy, options):
        P = self.classifier.predict_proba(self.vectorizer.transform(self._texts(df_img)))
        top = np.sort(P, axis=1)[:, ::-1]
        if strategy in ("MarginSampling", "BreakingTies"):
            uncertainty = 1 - (top[:, 0] - top[:, 1])
        elif strategy == "EntropySampling":
            uncertainty = -(P * np.log(np.clip(P, 1e-12, 1))).sum(axis=1)
        elif strategy == "RandomSampling":
            uncertainty = np.random.default_rng(0).random(len(P))
        else:  # LeastConfidence
            uncertainty = 1 - top[:, 0]
        hard = np.zeros(len(P), dtype=bool)
        hard[np.argsort(-uncertainty, kind="stable")[:query_cnt]] = True
        out = pd.DataFrame(
            {
                "sampleId": df_img["sampleId"].tolist(),
                "label": [self.classes[i] for i in P.argmax(axis=1)],
                "confidence": top[:, 0],
                "hard_example": hard,
            }
        )
        for j, name in enumerate(self.classes):
            out[f"prob_{name}"] = P[:, j]
        return out
