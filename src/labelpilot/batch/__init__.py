"""Files in, models out: train into the registry, evaluate, batch-predict and export.

The functions here are the core of ``labelpilot train / evaluate / predict / export``; the CLI only parses
arguments and draws progress bars.

Batch prediction serves every control of a bundle: the unprefixed output columns (``predictions``,
``confidence``, ...) are the first control's, as for a single-control model, and a multi-control model adds
``<control>.predictions``, ``<control>.confidence``, ... for each of its controls.

The package is split by command: :mod:`.inputs` (reading files and model folders), :mod:`.train` (train and
evaluate), :mod:`.predict` (batch prediction) and :mod:`.export` (export and import); every public name is
importable from ``labelpilot.batch`` as before.
"""

from labelpilot.batch.export import REQUIREMENTS, export_model, import_export, read_export
from labelpilot.batch.inputs import (
    KINDS,
    MEDIA_KINDS,
    Columns,
    Loaded,
    image_folder,
    is_media_input,
    load_folder,
    load_labelled,
    ls_export,
    media_rows,
    model_folder,
    schema_for,
)
from labelpilot.batch.predict import PredictStats, predict_file
from labelpilot.batch.train import evaluate_file, train_file

__all__ = [
    "KINDS", "MEDIA_KINDS", "REQUIREMENTS", "Columns", "Loaded", "PredictStats", "evaluate_file", "export_model",
    "image_folder", "import_export", "is_media_input", "load_folder", "load_labelled", "ls_export", "media_rows",
    "model_folder", "predict_file", "read_export", "schema_for", "train_file",
]
