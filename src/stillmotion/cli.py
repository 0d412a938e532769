"""The command line: ``stillmotion generate | plan | serve | models | doctor | bench``.

One function per subcommand, each a few lines over Settings and Engine. Exit codes: 0 ok, 2 invalid input,
3 cannot fit or out of memory on every rung, 130 cancelled (Ctrl-C), 1 anything else. Errors print one
line (``error [code]: message``) and never a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from stillmotion.config import Settings
from stillmotion.errors import InvalidRequest, StillmotionError, advice
from stillmotion.service.request_form import plain_int
from stillmotion.startup_heap import freeze_startup_objects


class MissingExtra(StillmotionError):
    """An optional part of stillmotion is not installed; the message names the pip extra."""

    code = "missing_extra"


logger = logging.getLogger("stillmotion.cli")

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_CANNOT_FIT, EXIT_CANCELLED = 0, 1, 2, 3, 130


def out(text: str) -> None:
    """The CLI's results go to stdout (paths, JSON); everything else goes to stderr through logging."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- argument parsing ------------------------------------------------------------------------------------


def _add_generation_args(parser: argparse.ArgumentParser, *, need_image: bool) -> None:
    """The request's fields as flags (from the one field list, engine/request.py), then the run's own."""
    from stillmotion.engine.request import request_fields

    parser.add_argument("--image", type=Path, required=need_image, help="input image (PNG, JPEG or WebP)")
    for declared in request_fields():
        info = declared.info
        help_text = info.help
        if declared.name == "prompt" and not need_image:
            help_text += " Optional for `plan`: the plan does not use it."
        flag = "--" + declared.name.replace("_", "-")
        if info.kind == "flag":  # on when given; None (the model's default) when not
            parser.add_argument(flag, action="store_const", const=True, default=None, help=help_text)
        elif info.kind == "loras":  # repeatable: --lora A.safetensors:0.8 --lora B.safetensors:1:low
            assert info.cli_parse is not None
            parser.add_argument(
                "--lora",
                dest=declared.name,
                action="append",
                type=_flag_type(info.cli_parse),
                metavar=info.cli_metavar,
                help=help_text + " Repeat for several.",
            )
        elif info.kind == "image":
            parser.add_argument(flag, type=Path, metavar="PATH", help=help_text)
        else:
            parser.add_argument(
                flag,
                type=_flag_type(info.cli_parse or declared.type),
                default=declared.default,
                choices=info.choices or None,
                metavar=info.cli_metavar,
                help=help_text,
            )
    parser.add_argument("--vram-budget-gb", type=float, help="use at most this much GPU memory")
    parser.add_argument(
        "--device", choices=["auto", "cuda", "cpu", "mps"], help="where to run (default auto)"
    )
    parser.add_argument(
        "--allow-approximate",
        action="store_true",
        help="allow memory savings that change the output (fp8 weights, VAE tiling)",
    )
    parser.add_argument(
        "--strategy",
        help="force a memory plan rung by name (see `stillmotion plan`); add +int8 for int8 weights "
        "(e.g. group_offload+int8; approximate: with --allow-approximate)",
    )
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face hub")
    parser.add_argument("--json", action="store_true", help="print a machine-readable result")


def _flag_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` with its ValueError as argparse's usage error (exit 2 with the message, not a traceback)."""

    def convert(text: str) -> Any:
        try:
            if parse is int:  # ASCII digits only, as the API takes them (int() would read "٨" and " 6 ")
                value = plain_int(text)
                if value is None:
                    raise ValueError(text)
                return value
            return parse(text)
        except ValueError as exc:
            plain = {int: "a whole number", float: "a number"}
            why = f"{text!r} is not {plain[parse]}" if parse in plain else str(exc)
            raise argparse.ArgumentTypeError(why) from None

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stillmotion", description="Image-to-video that fits your GPU.")
    parser.add_argument("--debug", action="store_true", help="log everything and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("generate", help="make a video from an image and a prompt")
    _add_generation_args(generate, need_image=False)
    generate.add_argument(
        "--output", type=Path, help="output file: .mp4 (default), .gif or .webp; with --batch, a folder"
    )
    generate.add_argument(
        "--batch",
        type=Path,
        help="many videos: a .jsonl file (one object of fields per line, 'image' among them) or a folder of "
        "images; the other flags are shared (see docs/batches.md)",
    )
    generate.add_argument(
        "--variations",
        type=_flag_type(int),
        help="each video N times with seeds seed, seed+1, ... (random without --seed)",
    )

    plan = sub.add_parser("plan", help="show the memory plan and estimates; loads no weights")
    _add_generation_args(plan, need_image=False)
    plan.add_argument(
        "--gpu-gb",
        type=float,
        help="plan for a CUDA card with this much free memory instead of this machine's device",
    )
    plan.add_argument(
        "--host-gb",
        type=float,
        help="plan for a machine with this much host memory (RAM) available instead of this one's",
    )

    serve = sub.add_parser("serve", help="run the web UI and REST API")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 7860)")
    serve.add_argument(
        "--workers",
        type=_workers,
        help="worker processes on this machine: a number, or 'auto' for one per visible GPU, each pinned to "
        "its card (default 1)",
    )
    serve.add_argument(
        "--ray",
        metavar="ADDRESS",
        dest="ray_address",
        help="run one Ray actor per GPU of the Ray cluster at ADDRESS ('auto': the cluster this machine "
        "belongs to) instead of local workers; needs the scale extra and, across machines, "
        "STILLMOTION_DATABASE_URL (PostgreSQL). See docs/scale.md",
    )

    models = sub.add_parser("models", help="list the registered models")
    models.add_argument("--json", action="store_true")
    doctor = sub.add_parser("doctor", help="device, memory, versions and cached weights")
    doctor.add_argument("--json", action="store_true")
    sub.add_parser("bench", help="GPU benchmark grid (see docs/benchmark.md)", add_help=False)
    return parser


def _workers(text: str) -> int | str:
    """``--workers``: 'auto' or a whole number of at least 1 (argparse turns the error into exit 2)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a whole number of at least 1")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("vram_budget_gb", "device", "host", "port", "workers", "ray_address"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "allow_approximate", False):
        overrides["allow_approximate"] = True
    if getattr(args, "offline", False):
        overrides["offline"] = True
    try:
        return Settings(**overrides)
    except ValidationError as exc:  # a bad STILLMOTION_* variable: name it, not a pydantic dump
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first.get("loc") else "settings"
        raise InvalidRequest(
            f"setting {name} (STILLMOTION_{name.upper()}) = {str(first.get('input'))[:80]!r}: "
            f"{first.get('msg', 'invalid value')}.",
            field=name,
        ) from None


def _request(args: argparse.Namespace) -> Any:
    """The request the flags ask for (every field of the field list, None where not given)."""
    from stillmotion.engine.request import GenerationRequest, request_fields

    values = {declared.name: getattr(args, declared.name) for declared in request_fields()}
    values["last_image"] = None if values.get("last_image") is None else str(values["last_image"])
    return GenerationRequest(**values)


# -- subcommands -----------------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from stillmotion import faults
    from stillmotion.cli_progress import ProgressDisplay
    from stillmotion.engine.engine import Engine
    from stillmotion.engine.progress import CancelToken
    from stillmotion.engine.resolve import resolve
    from stillmotion.media.image_input import load_image_file

    if args.batch is not None or args.variations is not None:
        return cmd_generate_batch(args)
    # Only the image is needed here: whether a prompt is required depends on the model (svd-xt takes
    # none), which the request's own check knows and names.
    if not args.image:
        raise InvalidRequest("--image is required (or --batch FILE.jsonl|FOLDER).", field="image")
    settings = _settings(args)
    image = load_image_file(args.image)
    output = args.output or settings.outputs_dir / time.strftime("stillmotion-%Y%m%d-%H%M%S.mp4")
    output.parent.mkdir(parents=True, exist_ok=True)
    engine = Engine(settings)
    freeze_startup_objects()  # the job's gc.collect then skips torch's and diffusers' objects
    last = None if args.last_image is None else load_image_file(args.last_image)
    request = resolve(
        _request(args),
        settings,
        (image.width, image.height),
        last_image_sha256=None if last is None else last.sha256,
    )
    cancel = CancelToken()
    with _ctrl_c_cancels(cancel), ProgressDisplay(enabled=not args.json) as progress:
        hooks = [*faults.hooks(), progress.job()]
        result = engine.generate(
            request, image, output, hooks, cancel=cancel, strategy=args.strategy, last_image=last
        )
    if args.json:
        out(json.dumps({"ok": True, **result.to_dict()}, default=str))
    else:
        for warning in result.warnings:
            logger.warning("%s", warning)
        for downgrade in result.downgrades:
            logger.warning(
                "out of memory in %s: continued with plan %s from step %d",
                downgrade["phase"],
                downgrade["to"],
                downgrade["resumed_at_step"],
            )
        out(str(result.video_path))
    return EXIT_OK


def cmd_generate_batch(args: argparse.Namespace) -> int:
    """``generate --batch`` / ``--variations``: every entry checked first, then each its own video."""
    from stillmotion import batch_cli
    from stillmotion.cli_progress import ProgressDisplay
    from stillmotion.engine.engine import Engine
    from stillmotion.engine.progress import CancelToken

    settings = _settings(args)
    entries = batch_cli.read_entries(args.batch) if args.batch is not None else [("--image", {})]
    if args.image is not None:
        entries = [(name, {"image": str(args.image), **fields}) for name, fields in entries]
    if args.variations is not None:
        entries = batch_cli.with_variations(entries, args.variations, args.seed)
    folder = args.output or settings.outputs_dir / time.strftime("batch-%Y%m%d-%H%M%S")
    if folder.suffix.lower() in (".mp4", ".gif", ".webp"):
        raise InvalidRequest(f"output={str(folder)!r}: with --batch, --output is a folder.", field="output")
    prepared = batch_cli.prepare(entries, _request(args), settings, folder)
    folder.mkdir(parents=True, exist_ok=True)
    cancel = CancelToken()
    engine = Engine(settings)
    freeze_startup_objects()  # each job's gc.collect then skips torch's and diffusers' objects
    with _ctrl_c_cancels(cancel), ProgressDisplay(not args.json, jobs=len(prepared)) as progress:
        results = batch_cli.run_batch(prepared, engine, cancel, progress)
    for result in results:
        if args.json:
            out(json.dumps(result, default=str))
        elif result["ok"]:
            out(result["video_path"])
        else:
            out(f"{result['name']}: error [{result['error']['code']}]: {result['error']['message']}")
    return EXIT_OK if all(result["ok"] for result in results) else EXIT_ERROR


def _planned_budget(args: argparse.Namespace, engine: Any) -> Any:
    """The machine ``plan`` plans for: this one, or a card of ``--gpu-gb`` and a host of ``--host-gb``
    (each replaces only its own part; the user's VRAM cap still applies, the smaller one wins)."""
    from stillmotion.memory.device import DeviceBudget, host_free_bytes, measure_budget
    from stillmotion.memory.types import GIB

    for name in ("gpu_gb", "host_gb"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise InvalidRequest(f"{name}={value} must be above 0 (GiB).", field=name)
    if args.gpu_gb is None and args.host_gb is None:
        return None  # the engine measures this machine
    if args.gpu_gb is not None:
        budget = DeviceBudget.fixed(
            args.gpu_gb,
            "cuda",
            name=f"a CUDA card with {args.gpu_gb:g} GiB free",
            user_budget_gb=engine.settings.vram_budget_gb,
        ).with_host(
            host_free_bytes()
            if engine.settings.host_budget_gb is None
            else int(engine.settings.host_budget_gb * GIB)
        )
    else:
        budget = measure_budget(engine.device, engine.settings)
    return budget if args.host_gb is None else budget.with_host(int(args.host_gb * GIB))


def cmd_plan(args: argparse.Namespace) -> int:
    from stillmotion.engine.engine import Engine
    from stillmotion.engine.resolve import resolve

    settings = _settings(args)
    image_size = None
    if args.image is not None:
        from stillmotion.media.image_input import load_image_file

        loaded = load_image_file(args.image)
        image_size = (loaded.width, loaded.height)
    engine = Engine(settings)
    budget = _planned_budget(args, engine)
    last_sha256 = None
    if args.last_image is not None:
        from stillmotion.media.image_input import load_image_file

        last_sha256 = load_image_file(args.last_image).sha256
    request = resolve(_request(args), settings, image_size, need_prompt=False, last_image_sha256=last_sha256)
    report = engine.plan(request, strategy=args.strategy, budget=budget)
    # A preset's size follows the input's aspect ratio: without --image, say which one the size assumed.
    assumed = "1:1" if image_size is None and request.resolution is not None else None
    if args.json:
        out(json.dumps({"ok": True, **report.to_dict(), "assumed_aspect": assumed}, default=str))
    else:
        from stillmotion.memory.report import format_plan

        req = report.request
        out(
            f"{req.model}: {req.width}x{req.height}, {req.num_frames} frames, {req.num_inference_steps} steps"
        )
        for note in req.notes():
            out(note)
        if assumed is not None:
            out(
                f"(no --image: a square {assumed} input assumed; {req.resolution} keeps the image's aspect "
                "ratio, so give --image for the size it will have)"
            )
        out(format_plan(report.plan, report.budget))
    return EXIT_OK


# What `serve` needs beyond the engine: the `server` extra of pyproject.toml (import name -> package).
SERVER_EXTRA = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "multipart": "python-multipart",
    "sqlalchemy": "sqlalchemy",
    "gradio": "gradio",
    "websockets": "websockets",
}


def check_server_extra() -> None:
    """Raise one plain error naming the extra to install when a server package is missing."""
    import importlib.util

    missing = []
    for module, package in SERVER_EXTRA.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module shadowed by None in sys.modules, or a broken one
            found = False
        if not found:
            missing.append(package)
    if missing:
        raise MissingExtra(
            f"`stillmotion serve` needs the server extra, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install it with: "
            "pip install 'stillmotion[server]' (from a checkout: pip install -e '.[server]')."
        )


def cmd_serve(args: argparse.Namespace) -> int:
    check_server_extra()
    from stillmotion.server.run import serve

    settings = _settings(args)
    if settings.ray_address:
        try:
            from stillmotion.jobs.workers import ray_pool
        except ImportError as exc:
            raise StillmotionError(
                f"--ray needs Ray, and {exc.name!r} is not installed: pip install 'stillmotion[scale]'.",
                code="ray_missing",
            ) from None
        ray_pool.connect(settings)  # a clear error now, not a failed start-up inside the server
    return serve(settings)


def cmd_models(args: argparse.Namespace) -> int:
    from stillmotion.engine.request import describe_rules
    from stillmotion.models.registry import list_specs

    specs = list_specs()
    if args.json:
        out(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "family": s.family,
                        "source": s.source,
                        "description": s.description,
                        "defaults": vars(s.defaults),
                        "limits": vars(s.limits),
                        "rules": describe_rules(s),
                    }
                    for s in specs
                ]
            )
        )
        return EXIT_OK
    for spec in specs:
        out(f"{spec.name:<22} {spec.family:<10} {spec.source}\n{'':<22} {spec.description}")
        for rule in describe_rules(spec):
            out(f"{'':<22}   {rule}")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from stillmotion.doctor import collect, format_report

    report = collect(_settings(args))
    out(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return EXIT_OK


# -- plumbing --------------------------------------------------------------------------------------------


class _ctrl_c_cancels:  # noqa: N801 - used as a context manager, reads like a sentence
    """First Ctrl-C cancels cleanly within one step; a second one stops at once."""

    def __init__(self, token: Any) -> None:
        self.token = token
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.token.cancelled:
                raise KeyboardInterrupt
            logger.warning("cancelling after the current step (Ctrl-C again to stop at once)")
            self.token.cancel()

        self._previous = signal.signal(signal.SIGINT, handler)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous or signal.SIG_DFL)


def _quiet_libraries() -> None:
    """The model libraries log through their own verbosity switches; keep their chatter out of the CLI.

    Through their environment variables, read when each library is first imported: importing them here
    would cost seconds (diffusers pulls in torch) for commands that never need them (`models`, `plan`).
    """
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY"):
        os.environ.setdefault(name, "error")
    logging.getLogger("httpx").setLevel(logging.WARNING)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": cmd_generate,
    "plan": cmd_plan,
    "serve": cmd_serve,
    "models": cmd_models,
    "doctor": cmd_doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark has its own flags
        from stillmotion.bench.run import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.debug:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except StillmotionError as exc:
        if args.debug:
            logger.exception("failed")
        if getattr(args, "json", False):
            out(json.dumps({"ok": False, "error": exc.to_dict()}))
        else:
            next_step = advice(exc.code, "cli")
            sys.stderr.write(
                f"error [{exc.code}]: {exc.message}" + (f" {next_step}" if next_step else "") + "\n"
            )
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("stopped\n")
        return EXIT_CANCELLED
    except Exception as exc:  # the last line of defence: a short message, the traceback only with --debug
        if args.debug:
            raise
        sys.stderr.write(
            f"error [internal_error]: {type(exc).__name__}: {exc} (run with --debug for details)\n"
        )
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
