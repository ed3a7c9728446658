"""Plugins that break the contract, each in its own way (tests/test_plugins.py runs them beside a good one), and
built-ins wrapped as plugins (their bytes and answers must be the built-ins')."""

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


def _wrapped(name: str, layout, masks=()):
    """ringx's ``name`` under the plugin contract (ringx.attention over the group it is given)."""
    import ringx

    def attention(q, k, v, *, group, causal=None, mask=None):
        masking = {"mask": mask} if mask is not None else {"causal": causal}
        return ringx.attention(q, k, v, algorithm=name, group=group, validate=False, **masking)

    attention.layout, attention.masks = layout, masks
    return attention


as_ring = _wrapped("ring", "contiguous", ("window", "docs"))
as_zigzag = _wrapped("zigzag", "zigzag")
full_only = _wrapped("ring", {"full": "contiguous", "causal": None})  # takes no causal attention
