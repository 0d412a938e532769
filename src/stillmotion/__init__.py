"""stillmotion: one still image and a sentence in, a short video out, on the GPU you have."""

import logging as _logging

__version__ = "0.1.0"

# torchao (the `quant` extra, int8 weights: models/int8.py) is imported by transformers and diffusers as soon
# as it is installed, in every process. On a CPU build of torch it logs that its CUDA-only kernels cannot
# load, diffusers that it cannot register torchao's serialized-checkpoint classes, and torch that torchao
# registers enums the old way: none of it concerns int8 weight-only, and every log and CLI run would start
# with it. Only these loggers are quietened, to errors.
for _name in ("torchao", "diffusers.quantizers.torchao.torchao_quantizer", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
