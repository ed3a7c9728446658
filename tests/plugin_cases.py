"""Plugins that break the contract, each in its own way (tests/test_plugins.py runs them beside a good one)."""

import time


def wrong_shape(q, k, v, *, causal, group):
    return q[:, :1].clone().requires_grad_()


def wrong_dtype(q, k, v, *, causal, group):
    return q.float() * 1 if q.dtype != __import__("torch").float32 else q.double() * 1


def not_differentiable(q, k, v, *, causal, group):
    return q.detach().clone()


def raises(q, k, v, *, causal, group):
    raise ValueError("this plugin always fails")


def hangs(q, k, v, *, causal, group):
    import torch.distributed as dist

    if dist.get_rank(group) == 0:
        time.sleep(3600)  # the other ranks wait in the next collective: --timeout bounds it
    return q * 1


not_callable = 42


def full_only(q, k, v, *, causal, group):
    return q * 1


full_only.layout = {"full": "contiguous", "causal": None}  # takes no causal mask: such points are skipped
