"""Data-parallel training with torch.distributed: several processes (or GPUs) train one model.

Started by `torchrun --nproc-per-node N -m fmstore train ...` or by `fmstore train --nproc N`
(`launch` below starts the same processes torchrun would, with the same environment variables).
Each process loads the data, makes the same split, vocabulary and initial model (same seed), and
walks the same permutation of every epoch in the same global batches, taking its contiguous share
of each (torch_engine.TorchEngine, `shard`). The gradient of every feature row (the rows the
batch touched; the others' are zero) is summed over the processes with one all-reduce of one flat
buffer per step (gloo on CPU, NCCL on GPU), and every process applies the same Adam update to the
same state, so parameters and Adam state stay identical across ranks (`check_identical`
compares them at the end) and the result is the single-process result up to the order of float additions. Only rank 0
validates; it tells the others the RMSE so that all stop early at the same epoch; only rank 0's
result is saved (the CLI's job).
"""

from __future__ import annotations

import hashlib
import os
from typing import Mapping, Sequence

import torch
import torch.distributed as dist

from fmstore.config import TrainConfig
from fmstore.errors import ConfigError
from fmstore.train.lazy_adam import LazyAdam
from fmstore.train.regularisation import config_reg
from fmstore.train.torch_engine import TorchEngine

# The environment torchrun gives each process, which `launch` gives too.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class Parallel:
    """This process's place in a data-parallel run (after `init`)."""

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend = backend

    def device_for(self, device: torch.device) -> torch.device:
        """The device of this rank: its own GPU (LOCAL_RANK) on CUDA, else the CPU."""
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def engine(self, model, optimizer: LazyAdam, config: TrainConfig, users, items, ratings):
        """The torch engine on this rank's share of each batch, gradients summed over ranks."""
        reg_scale = config_reg(model, users, items, config)

        def all_reduce(buffer: torch.Tensor) -> None:
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)

        return TorchEngine(
            model,
            optimizer,
            reg_scale,
            config.batch_size,
            users,
            items,
            ratings,
            shard=(self.rank, self.world_size),
            all_reduce=all_reduce,
        )

    def from_rank0(self, value: float) -> float:
        """Rank 0's `value` on every rank."""
        device = "cuda" if self.backend == "nccl" else "cpu"
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return float(t)

    def check_identical(self, model, optimizer: LazyAdam) -> None:
        """Gather a hash of each rank's parameters and Adam state (m, s, last step of every
        row): `describe` reports whether they are all the same."""
        digest = hashlib.sha256()
        adam = {"mv": optimizer.mv, "sv": optimizer.sv, "mw": optimizer.mw, "sw": optimizer.sw}
        adam |= {"m0": optimizer.m0, "s0": optimizer.s0, "last": optimizer.last}
        for name, tensor in sorted((model.state_dict() | adam).items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        hashes: list = [None] * self.world_size
        dist.all_gather_object(hashes, digest.hexdigest())
        self.identical = len(set(hashes)) == 1

    def describe(self) -> dict:
        return {
            "world_size": self.world_size,
            "backend": self.backend,
            "ranks_identical": getattr(self, "identical", None),
        }


def init(rank: int, world_size: int, local_rank: int, device: str) -> Parallel:
    """Join the process group (MASTER_ADDR / MASTER_PORT from the environment, as torchrun
    sets them): NCCL when training on CUDA, gloo otherwise."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    return Parallel(rank, world_size, local_rank, backend)


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(
    module_args: Sequence[str],
    nproc: int,
    env: Mapping[str, str],
    threads: int | None = None,
) -> int:
    """Run `python -m <module_args>` as `nproc` processes of one data-parallel job on this
    machine, by torchrun itself (torch.distributed.run, standalone rendezvous on a free port:
    RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set for each; a failed process stops
    the others). `env` is the processes' environment, `threads` their intra-op threads. They
    share this process's stdout and stderr. Returns the first non-zero exit status, else 0."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} must be at least 1")
    child_env = dict(env)
    if threads is not None:
        child_env["OMP_NUM_THREADS"] = child_env["NUMBA_NUM_THREADS"] = str(threads)
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "-m", *module_args]
    )
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(child_env)  # torchrun hands its own environment to the processes
    try:
        run(args)  # (`run`, not torchrun's `main`: no report block printed on a failure)
        return 0
    except ChildFailedError as exc:
        return next((f.exitcode for f in exc.failures.values() if f.exitcode), 1) or 1
    finally:
        os.environ.clear()
        os.environ.update(saved)


def default_threads(nproc: int) -> int:
    """Intra-op threads per process so that `nproc` processes share the CPUs this process may
    use (fmstore.threads: affinity and cgroup quota, not the host's count)."""
    from fmstore.threads import available_cpus

    return max(1, available_cpus() // nproc)
