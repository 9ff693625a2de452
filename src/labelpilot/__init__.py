"""labelpilot: model-assisted annotation for Label Studio and plain files."""

import os as _os

# onnxruntime >= 1.29 sends usage telemetry on Linux too (seen here as DNS look-ups of a Microsoft events host
# once a session registers custom ops); labelpilot runs offline and never phones home. Set before any
# onnxruntime session exists; a value the user set wins.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
