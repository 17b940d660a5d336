"""Data parallelism across a trial's training workers (``train.num_workers``, a torch.distributed process
group that Ray Train's `TorchTrainer` starts), for the two loops that use it:

- offline trials (`lamo_ray.train`): DistributedDataParallel through Ray Train's ``prepare_model``; this
  module gives them the loss weighting (`ddp_share`) and the whole batch's logged loss (`ddp_mean`);
- continual trials (`lamo_ray.continual.runner`): their trainable set changes at every phase (a pool
  attached after pre-training, the model frozen, a method's anchors), and a pool modulator no sample of
  the step selected must keep *no* gradient, so AdamW leaves it as one worker would. DDP's
  unused-parameter handling cannot say "unused on every rank" apart from "unused here", so these loops
  average gradients themselves after backward (`average_gradients`, one flat all-reduce, as DDP's
  buckets), sum selection counts (`sum_increments`) and share rank 0's evaluation (`broadcast_object`).

Every function is a no-op returning its input with one worker (no process group), so a loop calls them
unconditionally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def world_size() -> int:
    """Workers of the process group, 1 without one."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def ddp_share(mask: torch.Tensor, world: int) -> torch.Tensor:
    """The factor that makes a rank's masked-mean loss a DDP step on the whole batch: DDP averages the
    ranks' gradients, so rank r's mean over its ``n_r`` real positions is weighted ``world x n_r / sum n``
    (its share of the batch's real positions; ``mask``: this rank's weights of the loss's mean, any
    shape). One all-reduce of a scalar; 1 with one worker. Without it each rank's positions would weigh by
    1 / n_r: a rank whose segments are more padded (near trajectory starts) would count more than one
    worker on the concatenated batch gives it."""
    if world == 1:
        return torch.ones((), device=mask.device)
    real = mask.detach().sum().to(torch.float32)
    total = real.clone()
    torch.distributed.all_reduce(total)
    return real * world / total.clamp(min=1.0)


def ddp_mean(value: torch.Tensor, world: int) -> torch.Tensor:
    """The mean over the ranks of a scalar (detached): the whole batch's loss from the ranks' shares."""
    v = value.detach().to(torch.float32).clone()
    if world == 1:
        return v
    torch.distributed.all_reduce(v)
    return v / world


def average_gradients(params: Sequence[torch.nn.Parameter], world: int) -> None:
    """DDP's gradient averaging, in place, for the parameters ``params`` (the same list on every rank):
    a parameter with a gradient on some rank gets the mean over the ranks, zeros counted for the ranks
    where it had none (one worker on the concatenated batch: the samples that never reached it add
    nothing); one with no gradient on any rank keeps none. Two all-reduces: which parameters have a
    gradient, then their gradients flattened into one buffer."""
    if world == 1 or not params:
        return
    device = params[0].device
    has = torch.tensor([float(p.grad is not None) for p in params], device=device)
    torch.distributed.all_reduce(has)
    used = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not used:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float32)
                      for p in used])
    torch.distributed.all_reduce(flat)
    flat /= world
    for p, g in zip(used, flat.split([p.numel() for p in used])):
        p.grad = g.view_as(p).to(p.dtype)


def sum_increments(tensors: Sequence[torch.Tensor], before: Sequence[torch.Tensor], world: int) -> None:
    """Counters every rank advanced by its own samples (``tensors``, each with its value ``before`` the
    step): in place, ``before + the sum over the ranks of (tensor - before)``, the count one worker would
    have after the concatenated batch. One all-reduce."""
    if world == 1 or not tensors:
        return
    delta = torch.cat([(t - b).reshape(-1).to(torch.float64) for t, b in zip(tensors, before)])
    torch.distributed.all_reduce(delta)
    for t, b, d in zip(tensors, before, delta.split([t.numel() for t in tensors])):
        t.copy_(b + d.view_as(t).to(t.dtype))


def broadcast_module(module: torch.nn.Module, world: int) -> None:
    """Rank 0's parameters and buffers to every rank, in place (what DDP does when it wraps a model)."""
    if world == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(t.data, src=0)


def broadcast_object(obj: Any, world: int, device: torch.device | None = None) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank; ``obj`` itself with one worker. ``device``: the rank's
    training device (NCCL moves the pickled bytes through it)."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0, device=device if device and device.type == "cuda" else None)
    return box[0]
