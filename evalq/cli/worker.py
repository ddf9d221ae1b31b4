"""``evalq worker``: one process, one GPU (or a TP group), one vLLM engine, one model queue."""

from __future__ import annotations

import os
import socket

import click

from evalq.config import Settings


@click.command("worker")
@click.option("--model", required=True, help="Model name or folder (evalq/tiny-random: random).")
@click.option("--gpus", default="0", show_default=True, help="CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1.")
@click.option("--tokenizer", default=None, help="Tokenizer folder, if not the model's.")
@click.option("--load-format", default=None, help="vLLM load format (dummy: random weights).")
@click.option("--dtype", default=None, help="auto, bfloat16, float16, ...")
@click.option("--quantization", default=None, help="vLLM quantization method (awq, fp8, ...).")
@click.option("--max-model-len", type=int, default=None, help="Context length limit.")
@click.option("--max-num-seqs", type=int, default=None, help="Sequences per engine step.")
@click.option("--max-num-batched-tokens", type=int, default=None, help="Tokens per engine step.")
@click.option("--gpu-memory-utilization", type=float, default=None, help="Fraction of GPU memory.")
@click.option("--tensor-parallel-size", type=int, default=None, help="GPUs per engine.")
@click.option("--enforce-eager/--no-enforce-eager", default=None, help="Skip graphs/compile.")
@click.option("--prefix-caching/--no-prefix-caching", default=None, help="vLLM prefix caching.")
@click.option(
    "--concurrency", type=int, default=256, show_default=True, help="Episodes in flight per shard."
)
@click.option("--queue", default=None, help="Queue to consume (default: the model's queue).")
@click.option("--name", default=None, help="Worker node name (default gpu<ids>@<host>).")
@click.option(
    "--engine",
    "engine_factory",
    default=None,
    metavar="MODULE:CALLABLE",
    help="Engine factory taking EngineSettings (default: vLLM).",
)
@click.pass_obj
def worker(
    settings: Settings,
    model: str,
    gpus: str,
    tokenizer: str | None,
    load_format: str | None,
    dtype: str | None,
    quantization: str | None,
    max_model_len: int | None,
    max_num_seqs: int | None,
    max_num_batched_tokens: int | None,
    gpu_memory_utilization: float | None,
    tensor_parallel_size: int | None,
    enforce_eager: bool | None,
    prefix_caching: bool | None,
    concurrency: int,
    queue: str | None,
    name: str | None,
    engine_factory: str | None,
) -> None:
    """Serve a model's shards until stopped (SIGTERM finishes the current shard first)."""
    # Before anything imports torch: the engine must only ever see its own GPUs.
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    from evalq.models.registry import engine_settings_for
    from evalq.worker.main import serve

    engine_settings = engine_settings_for(
        model,
        tokenizer=tokenizer,
        load_format=load_format,
        dtype=dtype,
        quantization=quantization,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        enforce_eager=enforce_eager,
        enable_prefix_caching=prefix_caching,
    )
    node = name or f"gpu{gpus.replace(',', '-')}@{socket.gethostname()}"
    serve(
        settings,
        engine_settings,
        model=model,
        node=node,
        queue=queue,
        concurrency=concurrency,
        engine_factory=engine_factory,
    )
