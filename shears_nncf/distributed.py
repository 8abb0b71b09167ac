"""This process's place in a multi-process launch (torchrun, `accelerate launch`) and Python objects moved
between the processes.

`join` enters the process group the launcher's environment describes through accelerate's `PartialState`,
as HF's Trainer does for `shears train` and lm-eval for the models it loads: gloo on CPU, NCCL on GPU with
each process on its own GPU. Until a process joins (a plain run, or a stage that never does) it is process
0 of 1 and every helper here is a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch


def join(device: torch.device | str) -> torch.device:
    """Join the launcher's process group (once per process; nothing to join in a plain run) and return the
    device this process computes on: under several processes on CUDA its own GPU (cuda:LOCAL_RANK)."""
    device = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # not launched: leave accelerate's process-wide state alone
        return device
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")  # gloo for a CPU model, whatever GPUs the machine has
    return state.device if device.type == "cuda" else device


def leave() -> None:
    """Leave the process group before the interpreter shuts down. A process that exits still in it can abort
    (SIGABRT, "terminate called without an active exception"): gloo's worker threads outlive the interpreter's
    teardown (pytorch/pytorch#190489). A no-op in a plain run."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def is_main() -> bool:
    """The process that reads and writes the outputs and prints (rank 0 of all machines)."""
    return rank() == 0


def all_gather(obj) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def broadcast(obj):
    """The main process's `obj` on every process (the others pass anything, e.g. None)."""
    if world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def main_first():
    """The main process runs the block first (e.g. fills a shared cache), then the others."""
    if not is_main():
        torch.distributed.barrier()
    yield
    if is_main() and world_size() > 1:
        torch.distributed.barrier()
