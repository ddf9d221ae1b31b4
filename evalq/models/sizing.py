"""How many GPUs one engine needs: the model's weight size against the GPUs' free memory.

``evalq fleet --mode auto`` uses this to split its GPUs into tensor-parallel groups: the
smallest group whose share of the weights leaves most of each GPU's memory to the KV cache
(more cache, bigger batches), then as many data-parallel workers as there are groups.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalq.errors import UserError

GIB = 1024**3
# Weights may take at most this share of the memory vLLM is allowed on each GPU; the rest
# goes to the KV cache, activations and CUDA graphs. Below ~40% for the cache, batches shrink.
WEIGHT_SHARE = 0.6

_DTYPE_BYTES = {
    "float32": 4.0,
    "float": 4.0,
    "bfloat16": 2.0,
    "float16": 2.0,
    "half": 2.0,
}
# Bytes per weight of quantized checkpoints (scales and zero points included, roughly).
_QUANT_BYTES = {
    "awq": 0.56,
    "gptq": 0.56,
    "awq_marlin": 0.56,
    "gptq_marlin": 0.56,
    "bitsandbytes": 0.56,
    "fp8": 1.03,
    "fbgemm_fp8": 1.03,
    "compressed-tensors": 1.03,
}


@dataclass(frozen=True)
class ModelSize:
    """A model's weight footprint and the one shape limit on tensor parallelism."""

    parameters: int
    weight_bytes: int
    attention_heads: int


def read_config(model_dir: Path) -> dict[str, Any]:
    """The model's ``config.json`` (the text part of a multimodal config).

    Raises:
        UserError: the folder has no readable config.json.
    """
    path = model_dir / "config.json"
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"--mode auto needs the model's config.json: cannot read {path} ({exc}); "
            "choose --mode data_parallel or tensor_parallel instead"
        ) from exc
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def count_parameters(config: dict[str, Any]) -> int:
    """Parameters of a decoder-only transformer (Llama, Qwen, Mistral shapes) from its config.

    Embeddings, an untied output head, attention (grouped KV heads and QKV biases counted),
    a gated MLP and the norms; mixture-of-experts layers count every expert.

    Raises:
        UserError: the config lacks the sizes this needs.
    """
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        vocab = int(config["vocab_size"])
        heads = int(config["num_attention_heads"])
        intermediate = int(config.get("intermediate_size") or 4 * hidden)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"model config lacks {exc} needed to size the model") from exc
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
    moe_intermediate = int(config.get("moe_intermediate_size") or intermediate)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    attention += (heads + 2 * kv_heads) * head_dim  # QKV biases (Qwen); small either way
    mlp = 3 * hidden * (moe_intermediate * experts if experts > 1 else intermediate)
    per_layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + hidden


def bytes_per_parameter(config: dict[str, Any], dtype: str, quantization: str | None) -> float:
    """Bytes each weight takes once loaded.

    Raises:
        UserError: the dtype or quantization method is not one this knows.
    """
    quant = quantization or _config_quantization(config)
    if quant is not None:
        if quant not in _QUANT_BYTES:
            raise UserError(
                f"--mode auto cannot size quantization {quant!r}; choose the mode yourself"
            )
        return _QUANT_BYTES[quant]
    name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    if dtype != "auto":
        name = dtype
    if name not in _DTYPE_BYTES:
        raise UserError(f"--mode auto cannot size dtype {name!r}; choose the mode yourself")
    return _DTYPE_BYTES[name]


def _config_quantization(config: dict[str, Any]) -> str | None:
    qc = config.get("quantization_config")
    if isinstance(qc, dict):
        method = qc.get("quant_method")
        return str(method) if method else None
    return None


def model_size(model_dir: Path, dtype: str = "auto", quantization: str | None = None) -> ModelSize:
    """The model's size from its folder: the checkpoint index when present, else its config."""
    config = read_config(model_dir)
    params = count_parameters(config)
    per = bytes_per_parameter(config, dtype, quantization)
    weight_bytes = int(params * per)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file() and dtype == "auto" and quantization is None:
        try:
            total = int(json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"])
            weight_bytes = total
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return ModelSize(params, weight_bytes, int(config["num_attention_heads"]))


def choose_tensor_parallel(
    size: ModelSize,
    free_bytes: Sequence[int],
    gpu_memory_utilization: float,
) -> int:
    """The smallest tensor-parallel group that holds the model with room for its KV cache.

    Group sizes are powers of two that divide both the number of GPUs and the attention
    heads; each GPU of a group carries ``1/tp`` of the weights, which must fit in
    ``WEIGHT_SHARE`` of the memory vLLM may use there (the least free GPU counts).

    Raises:
        UserError: no group size fits.
    """
    if not free_bytes:
        raise UserError("no GPUs to size the model against")
    usable = min(free_bytes) * gpu_memory_utilization * WEIGHT_SHARE
    n = len(free_bytes)
    tp = 1
    while tp <= n:
        if n % tp == 0 and size.attention_heads % tp == 0 and size.weight_bytes / tp <= usable:
            return tp
        tp *= 2
    raise UserError(
        f"the model's weights ({size.weight_bytes / GIB:.1f} GiB) do not fit on {n} GPU(s) "
        f"with {min(free_bytes) / GIB:.1f} GiB free each (weights may use "
        f"{WEIGHT_SHARE:.0%} of --gpu-memory-utilization {gpu_memory_utilization}); "
        "add GPUs or quantize"
    )


def free_gpu_memory(gpus: Sequence[str]) -> list[int]:
    """Free bytes on each GPU, from ``nvidia-smi`` (no CUDA context is created here).

    Raises:
        UserError: ``nvidia-smi`` is missing or does not list a GPU.
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise UserError(
            "--mode auto reads free GPU memory with nvidia-smi, which is not here; "
            "choose --mode data_parallel or tensor_parallel"
        )
    out = subprocess.run(
        [smi, "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    free = {}
    for line in out.stdout.splitlines():
        index, _, mib = line.partition(",")
        if index.strip().isdigit() and mib.strip().isdigit():
            free[index.strip()] = int(mib.strip()) * 1024**2
    missing = [g for g in gpus if g not in free]
    if missing:
        raise UserError(f"nvidia-smi does not list GPU(s) {', '.join(missing)}")
    return [free[g] for g in gpus]
