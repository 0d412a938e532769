"""``shown_errors``: the web UI's one error mapping, for every handler a click runs.

Expected errors (a broken rule, an unusable image, a full queue...) become a ``gr.Error`` in the form's words
(views.error_text names the field by its label), logged as one line with their code and no traceback;
anything else is a fault and goes up as one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from stillmotion.errors import InvalidImage, StillmotionError
from stillmotion.webui.views import error_text, image_error_text

logger = logging.getLogger("stillmotion.webui")

F = TypeVar("F", bound=Callable[..., Any])


def shown_text(exc: StillmotionError) -> str:
    """The error as the UI shows it: an image's in plain words, any other naming the form's field."""
    if isinstance(exc, InvalidImage):
        text = image_error_text(exc)
        return f"Input image: {text[:1].lower()}{text[1:]}"
    return error_text(exc)


def shown_errors(fn: F) -> F:
    """Expected errors become ``gr.Error`` naming the field; nothing else leaks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StillmotionError as exc:
            code, message = exc.code, shown_text(exc)
        # An answer, not a fault: one log line with its code, and no traceback (Gradio prints one for every
        # gr.Error unless told not to).
        logger.info("UI %s refused: %s: %s", fn.__name__, code, message)
        raise gr.Error(message, title=code, print_exception=False)

    return wrapper  # type: ignore[return-value]
