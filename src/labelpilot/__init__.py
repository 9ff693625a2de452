"""labelpilot: model-assisted annotation for Label Studio and plain files."""

__version__ = "0.1.0"
