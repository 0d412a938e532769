"""GGUF files of the tiny Wan and LTX-Video transformers, written with the ``gguf`` package as users'
files are.

Wan GGUF files (city96's, QuantStack's) hold the original Wan checkpoint's tensor names
(``blocks.0.self_attn.q.weight``), LTX-Video's (city96's) the original LTX checkpoint's
(``transformer_blocks.0.attn1.q_norm.weight``, ``patchify_proj``, ``adaln_single``), which diffusers'
single-file loader renames (``convert_wan_transformer_to_diffusers``,
``convert_ltx_transformer_checkpoint_to_diffusers``). ``write_gguf`` renames a diffusers transformer's
weights back (``ORIGINAL_NAMES``, checked by running diffusers' converter on the result), quantizes every
linear weight whose rows split into whole blocks to ``quant`` and keeps the rest in float, as the published
converters do: norms and biases in F32, the patch embedding convolution in F16.

Which types can be written: the ``gguf`` package (0.19) quantizes Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and BF16;
its K-quants (Q2_K..Q6_K) only dequantize, so the 4-bit type written here is Q4_0.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from diffusers.loaders.single_file_utils import (
    convert_ltx_transformer_checkpoint_to_diffusers,
    convert_wan_transformer_to_diffusers,
)

# diffusers' names -> the original Wan checkpoint's, the inverse of convert_wan_transformer_to_diffusers's
# renames (applied in this order; norm2 and norm3 swap places).
ORIGINAL_NAMES = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
    ("norm2", "norm__swap"),
    ("norm3", "norm2"),
    ("norm__swap", "norm3"),
)
# diffusers' names -> the original LTX-Video checkpoint's (convert_ltx_transformer_checkpoint_to_diffusers).
LTX_ORIGINAL_NAMES = (
    ("proj_in", "patchify_proj"),
    ("time_embed", "adaln_single"),
    ("norm_q", "q_norm"),
    ("norm_k", "k_norm"),
)
QUANT_TYPES = {"Q8_0": gguf.GGMLQuantizationType.Q8_0, "Q4_0": gguf.GGMLQuantizationType.Q4_0}


def original_name(name: str, family: str = "wan") -> str:
    """One diffusers tensor name in the original checkpoint's naming of ``family`` ("wan" or "ltx")."""
    if family == "ltx":
        for ours, theirs in LTX_ORIGINAL_NAMES:
            name = name.replace(ours, theirs)
        return name
    if name == "scale_shift_table":
        return "head.modulation"
    if name.endswith(".scale_shift_table"):  # blocks.N.scale_shift_table
        return name.replace(".scale_shift_table", ".modulation")
    for ours, theirs in ORIGINAL_NAMES:
        name = name.replace(ours, theirs)
    return name


CONVERTERS = {
    "wan": convert_wan_transformer_to_diffusers,
    "ltx": convert_ltx_transformer_checkpoint_to_diffusers,
}


def original_state_dict(transformer: torch.nn.Module, family: str = "wan") -> dict[str, torch.Tensor]:
    """The transformer's weights under the original names; diffusers' converter must give the names back."""
    state = {original_name(k, family): v.detach().float() for k, v in transformer.state_dict().items()}
    back = CONVERTERS[family](dict(state))
    assert set(back) == set(transformer.state_dict()), "the renames are not diffusers' inverse"
    return state


def write_gguf(transformer: torch.nn.Module, path: Path, quant: str, family: str = "wan") -> Path:
    """``transformer`` (of ``family``: "wan" or "ltx") as a GGUF file with its linear weights in ``quant``
    (Q8_0, Q4_0 or BF16)."""
    qtype = QUANT_TYPES.get(quant) or gguf.GGMLQuantizationType[quant]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    writer = gguf.GGUFWriter(str(path), arch={"wan": "wan", "ltx": "ltxv"}[family])
    for name, tensor in original_state_dict(transformer, family).items():
        data = tensor.numpy().astype(np.float32)
        # Linear weights only: a 2-D table that is not a layer's weight (LTX's scale_shift_table) stays float.
        if data.ndim == 2 and name.endswith(".weight") and data.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        elif data.ndim == 1:
            writer.add_tensor(name, data)  # F32
        else:
            writer.add_tensor(name, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
