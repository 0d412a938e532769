"""Gradio inputs that let stillmotion's own rules speak, instead of Gradio's generic messages.

- ``uploaded_image`` hands the uploaded file over as it is: stillmotion validates images itself
  (media/image_input.py, the same rules and error codes as the API). Gradio's stock preprocessing opens the
  file with PIL first, so a non-image showed "Could not preprocess input component at index 0 ...
  UnidentifiedImageError ... /tmp/gradio/...".
- ``field_number`` refuses an out-of-range value with a message that names the field and the rule
  ("Frames: 1000 is above the maximum of 32 for this model"), where Gradio's says "Value 1000 is greater than
  maximum value 32". (No slider: a slider's box clamps a typed value to its range without a word.)

Stock components with their ``preprocess`` replaced on the instance: subclassing a Gradio component makes
Gradio write a ``.pyi`` stub next to our module at import, which fails on a read-only install. Gradio
deep-copies components into each session, and a bound method follows its copy, so the limits a model switch
sets (``gr.update(maximum=...)``) are the ones checked.
"""

from __future__ import annotations

import types
from typing import Any

import gradio as gr


def _as_uploaded(component: Any, payload: Any) -> Any:
    path = getattr(payload, "path", None)
    if payload is None or path is None:  # nothing, or a pasted data URL: the stock handling
        return type(component).preprocess(component, payload)
    return str(path)


def _in_range(component: Any, payload: Any) -> Any:
    label, low, high = component.label, component.minimum, component.maximum
    if payload is not None and high is not None and payload > high:
        raise gr.Error(
            f"{label}: {payload:g} is above the maximum of {high:g} for this model.",
            title="invalid_request",
            print_exception=False,  # a user's value, not a fault: no traceback in the server log
        )
    if payload is not None and low is not None and payload < low:
        raise gr.Error(
            f"{label}: {payload:g} is below the minimum of {low:g} for this model.",
            title="invalid_request",
            print_exception=False,
        )
    return type(component).preprocess(component, payload)


def uploaded_image(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` whose value is the path of the uploaded file, unprocessed (``type="filepath"``)."""
    image = gr.Image(type="filepath", **kwargs)
    image.preprocess = types.MethodType(_as_uploaded, image)  # type: ignore[method-assign]
    return image


def field_number(**kwargs: Any) -> gr.Number:
    """A ``gr.Number`` whose range error names the field."""
    number = gr.Number(**kwargs)
    number.preprocess = types.MethodType(_in_range, number)  # type: ignore[method-assign]
    return number
