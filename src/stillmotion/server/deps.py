"""FastAPI dependencies: the objects ``create_app`` builds, handed to routes (and overridable in tests).

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, so a route as
light as /health would wait for a free thread behind every slow request (issue 15.9).
"""

from __future__ import annotations

from fastapi import Request

from stillmotion.config import Settings
from stillmotion.service.job_service import JobService


async def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
