"""What a model family must provide: read this file before adding one.

The engine (engine/engine.py) runs ONE numbered flow for every model. Everything that differs between
I2VGen-XL, Wan, Stable Video Diffusion and LTX-Video sits behind ``ModelFamily``; one adapter per family
(models/i2vgen_xl.py, wan.py, svd.py, ltx.py) implements it over diffusers' and transformers' own classes and
follows that family's diffusers pipeline line by line, so the frames equal the pipeline's
(tests/engine/test_family_equivalence.py); models/adapters.py maps a spec to its adapter (``family_of``).
Adapters read a request through ``FamilyRequest`` below, never the engine's request class: models/ imports
nothing above it.

A family has three kinds of parts:

- **Data** in its ``ModelSpec`` (models/registry.py): repo id and revision, defaults, limits (size multiple,
  frame rule, whether it takes a prompt), parameter counts and memory facts for the planner.
- **Facts** on the adapter, below: which networks it has and which one denoises, the order diffusers offloads
  them in (``roles``; the loader derives the weight files from it), the repeated blocks worth compiling.
- **Steps**, below, called by the engine in this order for every generation::

      components = load_folder(...) | build_tiny(spec, seed) | assemble(random networks)
      cond       = encode(components, request, image, generator, cached)           # once per attempt
      scheduler  = new_scheduler(components, request)                                # once per generation
      latents    = initial_latents(components, request, cond, scheduler, generator)  # once per generation
      for t in scheduler.timesteps[steps_done:]:                                      # resumable after OOM
          noise  = predict_noise(components, scheduler, latents, t, cond, request, split_guidance)
          latents = scheduler_step(scheduler, noise, t, latents, cond)
      frames     = decode(components, latents, cond, request, decode_chunk_size, vae_tiling, generator)

Rules every adapter keeps, because the engine relies on them:

1. ``encode`` draws random numbers only from ``generator`` (or from generators of its own seeded from
   ``request.seed``), so an attempt repeated after an out-of-memory error gets identical conditioning.
   ``decode`` gets a generator that stands where the pipeline's does after the initial latents (LTX-Video
   0.9.1+ draws decode noise from it), on every attempt and after a resume.
2. All state that lives across steps is in the scheduler or the latents: the engine snapshots the scheduler
   (multistep solvers keep past model outputs) with the latents after every finished step and resumes from
   that pair.
3. Weights are never moved by the adapter: memory/apply.py places them as the plan says; the adapter moves
   inputs to the device of the latents.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import PIL.Image
import torch

if TYPE_CHECKING:
    from stillmotion.models.registry import ModelSpec


class FamilyRequest(Protocol):
    """What an adapter reads of a request: the engine's ``ResolvedRequest`` satisfies it (validated, every
    default filled in). Declared here so that models/ imports nothing above it."""

    @property
    def prompt(self) -> str: ...
    @property
    def negative_prompt(self) -> str: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def num_frames(self) -> int: ...
    @property
    def num_inference_steps(self) -> int: ...
    @property
    def guidance_scale(self) -> float: ...
    @property
    def fps(self) -> int: ...  # the generator's frame rate (some denoisers are conditioned on it)
    @property
    def seed(self) -> int: ...
    @property
    def do_classifier_free_guidance(self) -> bool: ...
    @property
    def decode_timestep(self) -> float | None: ...  # LTX-Video's decode options (None: the family has none)
    @property
    def decode_noise_scale(self) -> float | None: ...
    @property
    def guidance_scale_2(
        self,
    ) -> float | None: ...  # a two-expert model's low-noise guidance (None: the same)
    @property
    def flow_shift(self) -> float | None: ...  # the scheduler shift, when not the model's (the "fast" choice)


@dataclass(frozen=True)
class ModuleRoles:
    """Which of a model's networks plays which part, so placement (memory/apply.py) works the same for every
    family."""

    denoiser: str  # runs every step: "unet" or "transformer" (fp8 storage, chunking, block-level offload)
    encoders: tuple[str, ...]  # run once per request; released after encoding when the plan says so
    # The order the models run in: diffusers' ``model_cpu_offload_seq`` for the family's pipeline.
    offload_order: tuple[str, ...]
    # Further denoisers a model of the family may have (Wan 2.2 A14B's low-noise expert, "transformer_2"):
    # each is stored, chunked and offloaded like the denoiser; with model offload one is on the device at a
    # time.
    experts: tuple[str, ...] = ()

    def denoisers(self, present: Iterable[str]) -> tuple[str, ...]:
        """The denoiser and those of the experts a loaded model has (``present``: its network names)."""
        names = set(present)
        return tuple(name for name in (self.denoiser, *self.experts) if name in names)

    def param_role(self, name: str) -> str:
        """The ``ComponentParams`` field counting network ``name`` ("denoiser", "denoiser_2", or the name)."""
        if name == self.denoiser:
            return "denoiser"
        return "denoiser_2" if name in self.experts else name


class Components(Protocol):
    """A loaded model: its networks (what the memory plan places) and its scheduler (a template)."""

    scheduler: Any

    def modules(self) -> dict[str, torch.nn.Module]: ...


C = TypeVar("C", bound=Components)  # the family's components
K = TypeVar("K")  # the family's conditioning (embeddings, image latents, masks)

# ``cached(key, compute)``: the engine's embedding cache; ``compute`` runs only on a miss. Keys name what
# was encoded (e.g. ("text", prompt)); the engine adds the model, dtype and device.
Cached = Callable[[tuple[Hashable, ...], Callable[[], torch.Tensor]], torch.Tensor]
NetworkBuilders = Mapping[str, Callable[[], torch.nn.Module]]


class ModelFamily(ABC, Generic[C, K]):
    """One family of image-to-video models, run by the engine's single flow (see the module docstring)."""

    # --- facts -----------------------------------------------------------------------------------------
    name: str  # ModelSpec.family
    # diffusers pipeline classes whose folders this family loads (model_index.json "_class_name")
    pipeline_classes: tuple[str, ...]
    roles: ModuleRoles  # the denoiser, the encoders and diffusers' offload order (memory/apply.py)
    # Repeated blocks of the denoiser that regional torch.compile compiles once each (speed/compile.py).
    compile_blocks: tuple[str, ...] = ()
    # Tokens of one prompt the text encoder reads (the rest is cut); None: the model takes no prompt.
    text_token_limit: int | None = None

    def prompt_tokens(self, components: C, text: str) -> int:
        """How many tokens ``text`` is to this family's tokenizer (special tokens included)."""
        tokenizer = getattr(components, "tokenizer", None)
        if tokenizer is None or not text:
            return 0
        return len(tokenizer([text], add_special_tokens=True).input_ids[0])

    # --- loading ---------------------------------------------------------------------------------------

    @abstractmethod
    def load_folder(self, folder: Path, dtype: torch.dtype, variant: str | None, *, int8: bool = False) -> C:
        """Every component from a diffusers-format folder (local files only), weights in ``dtype``; with
        ``int8``, the denoiser(s) and the text encoder quantized while they load (models/int8.py)."""

    def load_folder_with_denoisers(
        self, folder: Path, dtype: torch.dtype, variant: str | None, given: Mapping[str, torch.nn.Module]
    ) -> C:
        """``load_folder``, with the denoisers in ``given`` by name ("transformer", a second expert's
        "transformer_2": GGUF transformers loaded from their own files, models/gguf.py) instead of read
        from the folder, whose weights for them may be absent. Families that take a GGUF transformer
        (``ModelSpec.accepts_gguf``) implement it."""
        raise NotImplementedError(f"the {self.name} family takes no GGUF transformer")

    @abstractmethod
    def build_tiny(self, spec: ModelSpec, seed: int) -> C:
        """The real classes at tiny sizes, seeded random weights, fp32 on the CPU (tests, offline demos)."""

    @abstractmethod
    def network_builders(self, config_dir: Path) -> NetworkBuilders:
        """One constructor per network from the shipped full-size configs (random weights, simulator)."""

    @abstractmethod
    def assemble(self, networks: dict[str, torch.nn.Module], config_dir: Path) -> C:
        """Full-size random networks plus tokenizer, image processor and scheduler built offline."""

    # --- one generation --------------------------------------------------------------------------------

    @abstractmethod
    def encode(
        self,
        components: C,
        request: FamilyRequest,
        image: PIL.Image.Image,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator,
        cached: Cached,
        last_image: PIL.Image.Image | None = None,
    ) -> K:
        """Prompt and image conditioning (text and image embeddings through ``cached``; image latents).

        ``last_image``: the frame to end on, for a model whose spec ``accepts_last_image`` (resolve refuses it
        for the others)."""

    def lora_host(self, components: C) -> Any:
        """A diffusers pipeline over ``components`` (the same modules) whose LoRA loader mixin loads, weighs,
        fuses and unloads LoRAs in them (models/lora.py); None: the family takes no LoRAs."""
        return None

    def new_scheduler(self, components: C, request: FamilyRequest, device: torch.device) -> Any:
        """A fresh scheduler with its timesteps set for ``request`` (never the components' template). This
        default suits a scheduler whose timesteps live on the device; a family overrides it for another
        schedule (LTX's shifted sigmas) or placement (I2VGen-XL's CPU timesteps)."""
        scheduler = type(components.scheduler).from_config(components.scheduler.config)
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        return scheduler

    @abstractmethod
    def initial_latents(
        self,
        components: C,
        request: FamilyRequest,
        cond: K,
        scheduler: Any,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The seeded starting latents (drawn after ``encode``'s draws, as the family's pipeline does)."""

    @abstractmethod
    def predict_noise(
        self,
        components: C,
        scheduler: Any,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        cond: K,
        request: FamilyRequest,
        split_guidance: bool,
    ) -> torch.Tensor:
        """The guided model output for one step; the guidance halves batched or, if split, one by one.

        ``scheduler`` is there for schedulers that scale the model input first (Euler's scale_model_input).
        """

    @abstractmethod
    def scheduler_step(
        self, scheduler: Any, noise_pred: torch.Tensor, timestep: torch.Tensor, latents: torch.Tensor, cond: K
    ) -> torch.Tensor:
        """One scheduler step: the latents of the next, less noisy step."""

    @abstractmethod
    def decode(
        self,
        components: C,
        latents: torch.Tensor,
        cond: K,
        request: FamilyRequest,
        decode_chunk_size: int,
        vae_tiling: bool,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Latents -> float32 frames (frames, height, width, 3) in [0, 1] on the CPU; ``generator`` for a VAE
        that decodes from noised latents (rule 1 above)."""


def read_config(folder: Path, file: str = "config.json") -> dict[str, Any]:
    """A shipped config file (models/configs/...) as a dict, for ``network_builders`` and ``assemble``."""
    config: dict[str, Any] = json.loads((folder / file).read_text())
    return config
