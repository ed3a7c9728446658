"""The cost model predicts a plugin from a trace of its own calls (costmodel/traced.py): one rank under PyTorch's fake
process group on meta tensors. A built-in wrapped as a plugin is predicted as the cost model predicts the built-in;
a real peer (PyTorch CP's ring) is predicted at 8 ranks; what cannot be traced is said in one line."""

from __future__ import annotations

import pytest

import ringx
from ringx_analysis import costmodel_cli
from ringx_costmodel import predict, traced
from ringx_costmodel.machine import Machine
from ringx_costmodel.network import Link
from ringx_suite.cli import UserError

SHAPE = dict(batch=1, seq=1024, heads=4, kv_heads=2, head_dim=32)


def machine(alpha_s: float, flops_per_s: float = 1e12) -> Machine:
    # cores_per_rank=1: no overlap, as the trace assumes (the dispatcher sees a call's posting, not its wait)
    return Machine("test", "test", flops_per_s, {"default": Link(alpha_s, 10.0)}, cores_per_rank=1)


def wrapped(name: str):
    def attention(q, k, v, *, causal, group):
        return ringx.attention(q, k, v, algorithm=name, causal=causal, group=group, validate=False)
    return attention


@pytest.mark.parametrize("algorithm", ["ring", "ringx4"])
def test_a_built_in_as_a_plugin_is_predicted_as_the_built_in(algorithm):
    traced.register(f"as-plugin-{algorithm}", wrapped(algorithm))
    m = machine(0.0)
    for causal in (False, True):
        got = predict(f"as-plugin-{algorithm}", causal, "fwd+bwd", 8, m, **SHAPE)
        want = predict(algorithm, causal, "fwd+bwd", 8, m, **SHAPE)
        if not causal:  # the same FLOPs and bytes, call for call: equal
            assert got.total_s == pytest.approx(want.total_s, rel=1e-9)
        else:  # torch counts a causal diagonal block whole (the kernel computes it whole): more compute, same bytes
            assert got.compute_s > want.compute_s
    fast = machine(0.0, flops_per_s=1e30)  # communication alone: equal bytes in every case
    for causal in (False, True):
        assert predict(f"as-plugin-{algorithm}", causal, "fwd+bwd", 8, fast, **SHAPE).total_s == pytest.approx(
            predict(algorithm, causal, "fwd+bwd", 8, fast, **SHAPE).total_s, rel=1e-9)


def test_back_to_back_exchanges_cost_one_latency_less_per_step():
    """The stated tolerance: ring's backward posts K/V on and dK/dV home together; the trace sees one exchange."""
    traced.register("as-plugin-ring", wrapped("ring"))
    m = machine(1e-5)
    got = predict("as-plugin-ring", False, "fwd+bwd", 8, m, **SHAPE)
    want = predict("ring", False, "fwd+bwd", 8, m, **SHAPE)
    assert 0 < want.total_s - got.total_s <= 8 * 1e-5 + 1e-12  # at most one latency per backward ring step


def test_a_real_peer_is_predicted_at_8_ranks():
    pr = predict("tcp-ring", True, "fwd+bwd", 8, machine(1e-5), **SHAPE)
    assert pr.compute_s > 0 and pr.exposed_comm_s > 0


def test_what_cannot_be_traced_is_one_line():
    def reads(q, k, v, *, causal, group):
        import torch.distributed as dist

        dist.all_reduce(k)
        return q * float(k.detach().sum())  # a value received: meta tensors hold none

    traced.register("reads", reads)
    with pytest.raises(traced.CannotTrace) as e:
        predict("reads", False, "fwd+bwd", 8, machine(0.0), **SHAPE)
    assert "meta tensors under the fake process group" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="not an installed plugin"):  # predict --plugin nope: one line, exit 2
        costmodel_cli._plugins("nope")
