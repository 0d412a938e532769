"""FastAPI dependencies: the objects ``create_app`` builds, handed to routes (and overridable in tests)."""

from __future__ import annotations

from fastapi import Request

from stillmotion.config import Settings
from stillmotion.service.job_service import JobService


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
