"""Error types of labelpilot.

Each error carries the HTTP status it maps to (in one place: ``server.errors``) and, where it applies,
the name of the field or control that caused it, so that a client always learns *what* was wrong.
"""

from __future__ import annotations


class LabelpilotError(Exception):
    """Base class of every error labelpilot raises on purpose."""

    status_code = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": type(self).__name__, "detail": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class SchemaError(LabelpilotError):
    """A label config labelpilot cannot read, or cannot pre-label yet."""

    status_code = 422


class InputError(LabelpilotError):
    """A request or file is malformed (missing field, wrong type, bad row)."""

    status_code = 422


class NotFoundError(LabelpilotError):
    """An unknown model, version or project."""

    status_code = 404


class MediaError(LabelpilotError):
    """Task media could not be fetched or decoded, or was not allowed."""

    status_code = 422


class ForbiddenError(LabelpilotError):
    """The request asks for something this server is not allowed to do (e.g. a URL off the allowlist)."""

    status_code = 403


class LabelStudioError(LabelpilotError):
    """Label Studio's API answered with an error or could not be reached."""

    status_code = 502


class TrainingError(LabelpilotError):
    """Training could not run (no usable examples, a single class, ...)."""

    status_code = 422


class ModelOptionsError(InputError):
    """A model option the family does not know, or a value of the wrong type (``models.base.ModelBase``).

    Raised wherever options come in (``/setup``'s ``extra_params.model_options``, ``labelpilot train --options``,
    the seed-003 loop, the Python API), so every door answers the same 422 naming the option and the valid ones.
    """

    def __init__(self, message: str, *, option: str | None, valid: list[str], family: str) -> None:
        super().__init__(message, field="options" if option is None else f"options.{option}")
        self.option = option
        self.valid = valid
        self.family = family

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "family": self.family, "valid_options": self.valid}
