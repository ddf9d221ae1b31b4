"""GPU lists and requests: the one parser of ``--gpus``, worker groups, and seed-style requests.

``evalq fleet``, ``evalq fleet compose``, ``evalq submit --gpu_ids`` and suite files all read
GPU ids here. A submit cannot place work on GPUs (workers choose theirs), so a run's GPU
request is recorded with the ``evalq fleet`` line that serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalq.errors import UserError

# The seed's --gpu_mode -> evalq fleet --mode. "accelerate" split one model over the GPUs
# (device_map="auto"); evalq's equivalent is tensor parallelism.
GPU_MODES = {
    "single": "single",
    "data_parallel": "data_parallel",
    "accelerate": "tensor_parallel",
    "auto": "auto",
}


def parse_gpus(gpus: str) -> list[str]:
    """GPU ids from ``"0,1,2,3"``, ``"0-7"`` or ``"0-3,6"``, in order, without repeats.

    Raises:
        UserError: a part is not an id or an ascending range, or an id repeats.
    """
    ids: list[str] = []
    for part in (p.strip() for p in gpus.split(",")):
        first, dash, last = part.partition("-")
        if dash:
            if not (first.strip().isdigit() and last.strip().isdigit()):
                raise UserError(f"--gpus {gpus!r}: {part!r} is not a range like 0-7")
            lo, hi = int(first), int(last)
            if hi < lo:
                raise UserError(f"--gpus {gpus!r}: range {part!r} runs backwards")
            ids += [str(i) for i in range(lo, hi + 1)]
        elif part.isdigit():
            ids.append(part)
        elif part:
            raise UserError(f"--gpus {gpus!r}: {part!r} is neither a GPU id nor a range like 0-7")
    if not ids:
        raise UserError(f"--gpus {gpus!r}: expected GPU ids like 0,1,2,3 or 0-7")
    if len(set(ids)) != len(ids):
        raise UserError(f"--gpus {gpus!r} names a GPU twice")
    return ids


def gpu_groups(gpus: Sequence[str], tensor_parallel_size: int) -> list[list[str]]:
    """Consecutive groups of ``tensor_parallel_size`` GPUs, one worker each.

    Raises:
        UserError: the GPUs do not split into whole groups.
    """
    if tensor_parallel_size < 1:
        raise UserError(f"--tensor-parallel-size must be at least 1, got {tensor_parallel_size}")
    if len(gpus) % tensor_parallel_size:
        raise UserError(
            f"{len(gpus)} GPUs do not split into groups of {tensor_parallel_size} "
            "(--tensor-parallel-size must divide the number of --gpus)"
        )
    step = tensor_parallel_size
    return [list(gpus[i : i + step]) for i in range(0, len(gpus), step)]


def fleet_command(model: str, mode: str | None, gpu_ids: str | None) -> str:
    """The ``evalq fleet`` line that starts workers for a seed-style GPU request.

    Raises:
        UserError: an unknown mode, bad GPU ids, or ``single`` with several GPUs.
    """
    if mode is not None and mode not in GPU_MODES:
        raise UserError(f"--gpu_mode {mode!r}: choose {', '.join(GPU_MODES)}")
    ids = parse_gpus(gpu_ids or "0")
    fleet_mode = GPU_MODES[mode or "auto"]
    if fleet_mode == "single" and len(ids) != 1:
        raise UserError(f"--gpu_mode single runs on one GPU; --gpu_ids names {len(ids)}")
    return f"evalq fleet --model {model} --gpus {','.join(ids)} --mode {fleet_mode}"


def gpu_request(model: str, mode: str | None, gpu_ids: str | None) -> dict[str, Any]:
    """A run's GPU request as ``run.config["requested_gpus"]`` stores it (checked first).

    Raises:
        UserError: as ``fleet_command``.
    """
    line = fleet_command(model, mode, gpu_ids)
    ids = [int(g) for g in parse_gpus(gpu_ids)] if gpu_ids else []
    return {"mode": mode, "gpu_ids": ids, "fleet": line}
