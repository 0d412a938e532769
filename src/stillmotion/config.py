"""Application settings, read once from the environment (prefix ``STILLMOTION_``) and passed down.

Build ``Settings()`` in ``cli.main()`` or ``create_app()``; nothing imports a global settings object.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The RIFE 4.6 checkpoint as published by Practical-RIFE, mirrored on the hub in the layout ComfyUI's frame
# interpolation nodes use (a plain state dict); models/rife_loader.py loads it. The revision is the repo's
# main branch: the commit hash could not be looked up from the machine this was written on (no hub access).
# Pin it with STILLMOTION_RIFE_REVISION=<commit>; every video records the commit it was made with either way.
RIFE_REPO_ID = "MachineDelusions/RIFE"
RIFE_REVISION = "main"


class Settings(BaseSettings):
    """Everything a deployment may want to change, with the embedded defaults that need no setup."""

    model_config = SettingsConfigDict(env_prefix="STILLMOTION_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Root folder for the job database, uploads, outputs and logs.",
    )
    default_model: str = Field(
        default="i2vgen-xl",
        description="Model used when a request names none: a registered name, a Hugging Face repo id, "
        "a local folder, or 'tiny-i2vgen-xl' (built-in random weights, no download).",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Hugging Face cache folder for downloaded weights (default: the hub's own cache).",
    )
    model_dirs: str = Field(
        default="",
        description="Folders (separated by ':') holding model folders that API and web UI requests may name "
        "(by a path relative to one of them); empty, the default: none. The CLI takes any folder.",
    )
    offline: bool = Field(
        default=False,
        description="Never contact the Hugging Face hub; load weights only from the cache or local folders.",
    )
    device: str = Field(default="auto", description="auto, cuda, cuda:N, mps or cpu.")
    rife_repo_id: str = Field(
        default=RIFE_REPO_ID, description="Hugging Face repo of the RIFE 4.6 weights (interpolator=rife)."
    )
    rife_revision: str = Field(
        default=RIFE_REVISION,
        description="Revision of the RIFE weights (a commit hash pins it); each video records the commit.",
    )
    vram_budget_gb: float | None = Field(
        default=None,
        gt=0,
        description="Use at most this much GPU memory (GiB) for a generation; default: what is free now.",
    )
    host_budget_gb: float | None = Field(
        default=None,
        gt=0,
        description="Plan for this much host memory (RAM, GiB) instead of what the system reports available "
        "now; higher only where swap or memory-mapped weights are known to serve (docs/memory.md section 9).",
    )
    reserve_vram_gb: float = Field(
        default=0.5,
        ge=0,
        description="GPU memory (GiB) always left free for the CUDA context, other programs and the desktop.",
    )
    allow_approximate: bool = Field(
        default=False,
        description="Let the memory planner use savings that change the output (fp8 weights, VAE tiling). "
        "They are labelled in the output's metadata.",
    )
    compile_unet: bool = Field(
        default=False,
        description="torch.compile the UNet's repeated blocks on CUDA (exact; faster steps after a cold "
        "start of minutes, cached under data_dir/compile-cache). Off until measured on GPUs (docs/speed.md).",
    )
    embedding_cache_size: int = Field(
        default=32, ge=0, description="Prompt and image embeddings kept in memory (LRU entries per kind)."
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds.")
    port: int = Field(default=7860, ge=1, le=65535, description="Port of the web UI and REST API.")
    api_token: str | None = Field(
        default=None,
        description="Bearer token required by the API; mandatory when binding a non-loopback address.",
    )
    max_upload_mb: float = Field(default=20.0, gt=0, description="Largest accepted upload, in MB.")
    max_queue_size: int = Field(
        default=1000, ge=1, description="Queued jobs beyond which submissions get 429."
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts before a job that keeps killing the worker is failed."
    )
    step_timeout_s: float = Field(
        default=600.0, gt=0, description="A denoising step slower than this is treated as a hung worker."
    )
    checkpoint_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="Save a running job's denoising state to its folder at most this often (0: after every "
        "step); a worker that is restarted or killed resumes the job there instead of at step 1.",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete finished jobs and their files after this many days (off by default).",
    )
    min_free_disk_mb: float = Field(
        default=500.0, ge=0, description="Refuse new jobs while the data folder's disk has less free space."
    )
    upload_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="An upload (the whole request body) slower than this is abandoned with 408: a slow-loris "
        "client must not hold a connection and a temp file forever.",
    )

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the job database, e.g. postgresql+psycopg://user:pass@host/db (needs "
        "the scale extra). Default: SQLite at data_dir/jobs.sqlite3, for one service on one machine.",
    )
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default=1,
        description="Worker processes on this machine: a number, or 'auto' for one per visible GPU (each "
        "pinned to its card with CUDA_VISIBLE_DEVICES).",
    )
    ray_address: str | None = Field(
        default=None,
        description="Run the workers as Ray actors, one per GPU of this Ray cluster ('auto' or host:port; "
        "needs the scale extra and a database_url every node reaches). Default: local worker processes.",
    )
    node_name: str = Field(
        default_factory=socket.gethostname,
        description="This machine's name in worker ids and /health (default: the host name).",
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A running job's lease: its worker renews it every lease_s/3; a job whose lease "
        "lapsed (its worker or node died) goes back to the queue.",
    )

    @property
    def model_roots(self) -> tuple[Path, ...]:
        """``model_dirs`` as resolved folders."""
        return tuple(Path(part).expanduser().resolve() for part in self.model_dirs.split(":") if part.strip())

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"
