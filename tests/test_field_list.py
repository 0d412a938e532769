"""One field list (engine/request.py ``request_fields``): every surface asks for every declared field.

The API's forms (service/schemas.py), the CLI's flags (cli.py) and the resolved request that the service
stores and the worker runs are derived from the declaration, so a field declared there is asked for
everywhere (the web UI's form: tests/server/test_webui_form.py). Plans need no second image file.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from stillmotion import cli
from stillmotion.engine import request as request_module
from stillmotion.engine.request import DeclaredField, RequestField, ResolvedRequest, request_fields
from stillmotion.service.schemas import BatchForm, JobForm, PlanForm

# Asked for, then resolved into another field of the stored request (``interpolate``).
RESOLVED_INTO_OTHERS = {"interpolate_fps"}


def declared_names() -> set[str]:
    return {declared.name for declared in request_fields()}


def cli_destinations(command: str) -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest for action in sub.choices[command]._actions}


def test_every_declared_field_is_asked_for_by_the_api_and_the_cli_and_stored_resolved() -> None:
    names = declared_names()
    assert names <= set(JobForm.model_fields) and names <= set(BatchForm.model_fields)
    assert names - {"last_image"} <= set(PlanForm.model_fields)
    assert names <= cli_destinations("generate") and names <= cli_destinations("plan")
    assert names - RESOLVED_INTO_OTHERS <= {f.name for f in fields(ResolvedRequest)}


def test_a_field_declared_later_becomes_a_cli_flag_with_its_help(monkeypatch: pytest.MonkeyPatch) -> None:
    new = DeclaredField(
        "motion_strength", float, RequestField("Motion strength", "How much moves.", "float"), None
    )
    declared = [*request_fields(), new]
    monkeypatch.setattr(request_module, "request_fields", lambda: iter(declared))
    assert "motion_strength" in cli_destinations("generate")
    args = cli.build_parser().parse_args(["generate", "--image", "a.png", "--motion-strength", "0.5"])
    assert args.motion_strength == 0.5
