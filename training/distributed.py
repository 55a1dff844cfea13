"""Data-parallel training under ``torchrun``: process group, ranks, sharded batches, gathers.

``torchrun --nproc_per_node=N -m training fit ...`` starts N copies of ``fit`` with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` set. :func:`session` joins them in one process group (NCCL on CUDA,
rank on ``cuda:LOCAL_RANK``; gloo on CPU) and ``fit`` trains a DistributedDataParallel model.
Without those variables, or with one process, every helper is a no-op: ``fit`` runs as before.
A DDP run is built to match one process with the same ``--batch-size`` (the global batch):

- rank r takes items r, r+W, ... of each of the single-process run's own seeded batches
  (:class:`ShardedBatches`): ``batch/W`` images a step; augmentation draws for the whole batch
  and keeps the rank's rows; DDP averages the gradients;
- validation: rank r scores images r, r+W, ... and :func:`gather_rows` reassembles them, so every
  rank has the metrics of the whole validation set and takes the same keep-best/stop decisions;
- BatchNorm: SyncBatchNorm on CUDA (global-batch statistics; 32/W images per rank are noisy).
  PyTorch has none for CPU, where each rank normalises its own share: the one known difference.
  :func:`sync_buffers` gives every rank rank 0's running statistics before validation.

Rank 0 prepares the data first (archives, disk cache and bad-data errors happen once), reads the
pretrained weights and the resume state (DDP and :func:`from_main` pass them on), and alone writes
the checkpoint, log and state. A rank that dies makes torchrun stop the others; one that hangs
makes the others' next collective fail after ``--dist-timeout`` (the process-group timeout).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

from model.inference import resolve_device
from training.errors import TrainingError

T = TypeVar("T")


class EveryRankError(TrainingError):
    """An error every rank raises alike (a bad option, a failed resume): only rank 0 prints it."""


@dataclass(frozen=True)
class Launch:
    """What the launcher put in the environment; without torchrun: rank 0 of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Launch:
        env = os.environ
        if not all(k in env for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")):
            return cls()
        return cls(int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"]))


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return get_rank() == 0


def check_options(batch_size: int, folds: int) -> None:
    """Refuse what a DDP run cannot do, on every rank before any work (rank 0 says it once)."""
    world = Launch.from_env().world_size
    if world <= 1:
        return
    if folds > 1:
        raise EveryRankError(
            f"--folds {folds} is not supported under torchrun; run cross-validation as one "
            "process, or train each split as its own torchrun job"
        )
    if batch_size % world:
        lower = batch_size - batch_size % world
        options = " or ".join(str(b) for b in (lower, lower + world) if b > 0)
        raise EveryRankError(
            f"--batch-size {batch_size} is the global batch and must divide evenly among the "
            f"{world} processes (each takes batch/{world}); use a multiple of {world}, e.g. "
            f"{options}"
        )


def local_device(name: str) -> torch.device:
    """This process's device: ``--device`` alone, or under torchrun ``cuda:LOCAL_RANK``/CPU."""
    launch = Launch.from_env()
    if launch.world_size <= 1:
        return resolve_device(name)
    if name not in ("auto", "cuda", "cpu"):
        raise EveryRankError(
            f"--device {name}: under torchrun each process uses cuda:LOCAL_RANK; pass --device "
            "cuda (or auto, or cpu) and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise EveryRankError("--device cuda requested but CUDA is not available")
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise TrainingError(
            f"LOCAL_RANK {launch.local_rank} but this node has {count} GPU(s): start at most "
            f"{count} processes per node (torchrun --nproc_per_node={count}, or =gpu)"
        )
    return torch.device("cuda", launch.local_rank)


@contextmanager
def session(device_name: str, timeout_s: float) -> Iterator[None]:
    """Join the torchrun job's process group for the duration of the block (no-op without one).

    The group is destroyed when the block ends normally. After an error it is left to process
    exit: destroying NCCL communicators with collectives still pending can block, and torchrun
    stops the remaining ranks anyway.
    """
    launch = Launch.from_env()
    if launch.world_size <= 1 or active():
        yield
        return
    device = local_device(device_name)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s),
                            device_id=device if cuda else None)
    try:
        yield
    except RuntimeError as exc:
        if not _lost_contact(exc):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"rank {launch.rank} lost contact with the other processes ({first_line}): another "
            "rank failed, hung or was killed (a failed rank printed its own error; torchrun's "
            "summary lists every rank). If one rank is merely slow on its own (e.g. unpacking "
            f"archives, decoding a large dataset), raise --dist-timeout (now {timeout_s:g} s)."
        ) from exc
    dist.destroy_process_group()


def _lost_contact(exc: RuntimeError) -> bool:
    """A collective that timed out or whose peer vanished. gloo raises a plain RuntimeError
    ("Timed out waiting 5000ms for recv operation", "Application timeout caused pair closure",
    "Connection closed by peer"); NCCL's watchdog ends the process itself after the timeout."""
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        s in text for s in ("timed out", "timeout", "closed by peer", "connection reset"))


@contextmanager
def main_rank_first() -> Iterator[None]:
    """Rank 0 runs the block, then the other ranks (together). If rank 0 fails inside, the others
    are still waiting at the barrier when torchrun stops them: the error is reported once."""
    if active() and not is_main():
        dist.barrier()
    yield
    if active() and is_main():
        dist.barrier()


def from_main(load: Callable[[], T]) -> T:
    """``load()`` on rank 0 and its result sent to every rank; its error is raised on every rank."""
    if not active():
        return load()
    box: list[Any] = [None]
    error: TrainingError | None = None
    if is_main():
        try:
            box[0] = ("ok", load())
        except TrainingError as exc:
            box[0], error = ("error", str(exc)), exc
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    status, value = box[0]
    if status == "error":
        raise EveryRankError(value)
    return value


def use_sync_batchnorm(model: nn.Module, device: torch.device, wanted: bool | None) -> nn.Module:
    """Under DDP on CUDA (unless ``wanted`` is False) BatchNorm layers become SyncBatchNorm.

    The conversion keeps the module tree's root, parameters and buffers (and so the state-dict
    keys and the checkpoint format); only the BatchNorm modules are swapped.
    """
    if not active() or wanted is False:
        return model
    if device.type != "cuda":
        if wanted:
            raise EveryRankError("--sync-bn needs CUDA: PyTorch has no CPU SyncBatchNorm")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (rank 0's weights and buffers are copied to
    every rank here); the model itself without a process group. Save ``model``, not the wrapper:
    its state dict has no ``module.`` prefixes."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


class ShardedBatches(Sampler[list[int]]):
    """The single-process run's batches, each dealt out: rank r takes items r, r+W, r+2W, ...

    Together the ranks see exactly the batches one process would, in the same order, so results
    and resuming match a single-process run with the same global batch and seed.
    """

    def __init__(self, batches: Iterable[Iterable[int]], *, rank: int, world_size: int) -> None:
        self.batches = [[int(i) for i in b] for b in batches]
        self.rank, self.world_size = rank, world_size
        smallest = min((len(b) for b in self.batches), default=world_size)
        if smallest < world_size:
            raise EveryRankError(
                f"a batch of {smallest} training images cannot be shared by {world_size} "
                "processes: use fewer processes or more training images"
            )

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batches)


def shard_batches(batches: Iterable[Iterable[int]]) -> ShardedBatches:
    return ShardedBatches(batches, rank=get_rank(), world_size=get_world_size())


def my_share(items: np.ndarray) -> np.ndarray:
    """This rank's items r, r+W, ... (all of them without a process group)."""
    return np.ascontiguousarray(items[get_rank() :: get_world_size()])


def gather_rows(mine: np.ndarray, total: int) -> np.ndarray:
    """Every rank's :func:`my_share` rows, back in their original order, on every rank."""
    if not active():
        return mine
    world = get_world_size()
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, mine)
    out = np.empty((total, *mine.shape[1:]), dtype=mine.dtype)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out


def sum_across_ranks(values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (e.g. loss totals and image counts of an epoch)."""
    if not active():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each forward pass, so after an epoch's last step each
    rank's still differ by its own last batch; validation and the saved weights need one model.
    """
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


# ---- TEST-ONLY FAULT INJECTION: the one place these variables are read. ------------------------
# tests/training/test_distributed.py sets them to prove that a failed or a stuck rank ends the
# whole torchrun job with a clear message instead of a hang; nothing sets them in normal use.
FAULT_RANK_ENV = "INVASIVE_TEST_FAIL_RANK"  # the rank that fails
FAULT_EPOCH_ENV = "INVASIVE_TEST_FAIL_EPOCH"  # at the start of this epoch (default 1)
FAULT_MODE_ENV = "INVASIVE_TEST_FAIL_MODE"  # "raise" (default) or "hang"


def fault_injection_point(epoch: int) -> None:
    """Test-only: fail or hang here if the fault-injection variables name this rank and epoch."""
    target = os.environ.get(FAULT_RANK_ENV)
    if target is None or int(target) != get_rank():
        return
    if epoch != int(os.environ.get(FAULT_EPOCH_ENV, "1")):
        return
    if os.environ.get(FAULT_MODE_ENV, "raise") == "hang":
        while True:  # a stuck rank: alive, never reaching the next collective
            time.sleep(60)
    raise RuntimeError(f"fault injected by {FAULT_RANK_ENV}={target} (test-only hook) at the "
                       f"start of epoch {epoch}")
