"""The ``text-linear`` family (split out of one module; see :mod:`.model`)."""

from labelpilot.models.text_linear.model import TextLinearModel, _gain_threshold

__all__ = ["TextLinearModel", "_gain_threshold"]
