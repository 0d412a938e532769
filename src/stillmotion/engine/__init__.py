"""The generation engine: request validation, the denoising loop, progress and cancel, embedding cache."""
