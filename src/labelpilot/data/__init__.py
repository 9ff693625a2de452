"""Examples, targets and predictions, and converters between them and outside formats."""

from labelpilot.data.types import Box, Example, FitReport, Prediction, Span, Target

__all__ = ["Box", "Example", "FitReport", "Prediction", "Span", "Target"]
