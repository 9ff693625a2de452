"""A seed-003 plug-in for span (NER) rounds, written to the protocol only (it imports nothing from labelpilot).

It remembers the annotated strings with their labels and finds them again in new texts. Run it with::

    labelpilot loop --task spans --input-dir exp_dir/input --output-dir exp_dir/output \
        --model examples/plugin_demo/span_model.py:DictNer

What labelpilot hands a span plug-in: the frames' ``label`` column holds Label Studio span JSON
(``[{"start", "end", "text", "labels"}]``) whichever form the CSV used (span JSON or BIO tags).
``query_hard_example`` returns a DataFrame with ``sampleId``, ``label`` (the predicted spans as span JSON, or BIO
tags) and ``confidence``; with ``--options flag=true`` it also marks its own ``hard_example`` rows, else
labelpilot picks the hard examples from the confidences (within ``--query-cnt`` and ``--token-budget``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


class DictNer:
    """A seed-003 plug-in span model: remembers the annotated strings and finds them again."""

    def __init__(self):
        self.lexicon = {}
        self.flag = False

    def split_train_val(self, df_init, df_anno, is_first_train, val_size, random_seed):
        df = df_init if is_first_train else pd.concat([df_init, df_anno])
        n_val = int(len(df_init) * val_size)
        return df.iloc[n_val:], df_init.iloc[:n_val]

    def train_model(self, df_train, df_val, work_dir, is_first_train, options):
        self.flag = bool(options.get("flag"))
        for text, label in zip(df_train["text"], df_train["label"], strict=True):
            for region in json.loads(label):  # Label Studio span JSON, whatever form the CSV used
                assert text[region["start"]:region["end"]] == region["text"]
                self.lexicon[region["text"]] = region["labels"][0]

    def save_model(self, save_dir):
        Path(save_dir, "lexicon.json").write_text(json.dumps(self.lexicon))

    def load_model(self, model_dir):
        self.lexicon = json.loads(Path(model_dir, "lexicon.json").read_text())
        return self

    def query_hard_example(self, df_img, work_dir, query_cnt, strategy, options):
        out = []
        for sid, text in zip(df_img["sampleId"], df_img["text"], strict=True):
            spans = []
            for word, label in self.lexicon.items():
                start = text.find(word)
                if start >= 0:
                    spans.append({"start": start, "end": start + len(word), "labels": [label], "score": 0.9})
            conf = 0.9 if len(spans) == 2 else 0.3
            row = {"sampleId": sid, "label": json.dumps(spans), "confidence": conf}
            if self.flag:
                row["hard_example"] = int(conf < 0.5)
            out.append(row)
        return pd.DataFrame(out)
