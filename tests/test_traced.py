"""The cost model predicts a plugin from a trace of its own calls (costmodel/traced.py): one rank under PyTorch's fake
process group on meta tensors. A built-in wrapped as a plugin is predicted as the cost model predicts the built-in;
a real peer (PyTorch CP's ring) is predicted at 8 ranks; what cannot be traced is said in one line."""

from __future__ import annotations

import warnings

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


PEERS = ["as-plugin-ring", "as-plugin-ringx4", "tcp-allgather", "tcp-ring"]
DIRECT = traced.trace_calls  # a trace at the length asked, whatever the tests patch


def registered(name: str):
    if name.startswith("as-plugin-"):
        traced.register(name, wrapped(name.removeprefix("as-plugin-")))
    else:
        from ringx_suite import plugins

        traced.register(name, plugins.load([name])[name].fn)
    return traced._REGISTERED[name]


@pytest.mark.parametrize("name", PEERS)
def test_the_fast_tracer_counts_as_torchs_counter(name):
    """One mode, each distinct meta op run once: the calls and FLOPs torch's FlopCounterMode under Traffic gives."""
    fn = registered(name)
    for causal in (False, True):
        for rank in (0, 7):
            assert traced.trace_calls(fn, causal, 8, rank, **SHAPE) == traced.trace_calls(
                fn, causal, 8, rank, reference=True, **SHAPE)


def counting_traces(monkeypatch) -> list:
    """The (rank, seq) of every trace taken from here on."""
    taken = []

    def counted(fn, causal, world, rank, **kw):
        taken.append((rank, kw["seq"]))
        return DIRECT(fn, causal, world, rank, **kw)

    monkeypatch.setattr(traced, "trace_calls", counted)
    return taken


@pytest.mark.parametrize("name", PEERS)
def test_a_length_is_derived_as_it_is_traced(name, monkeypatch):
    """Traced at two lengths and found right at a third, the others are derived: the same integers, call for call,
    as a trace at that length."""
    fn = registered(name)
    shape = {k: v for k, v in SHAPE.items() if k != "seq"}
    taken = counting_traces(monkeypatch)
    for causal in (False, True):
        for seq in (1024, 2048, 512):  # fitted to the first two, checked at the third
            traced.traces(name, causal, 8, (0, 7), seq=seq, **shape)
        assert len(taken) == 6
        for seq in (4096, 1536, 3072, 16 << 10):
            got = traced.traces(name, causal, 8, (0, 7), seq=seq, **shape)
            assert len(taken) == 6  # derived: no trace taken
            assert got == tuple(DIRECT(fn, causal, 8, r, seq=seq, **shape) for r in (0, 7))
        taken.clear()


def squared(q, k, v, *, causal, group):
    """Gathers a tensor of n^2 elements (n the local length): bytes off the linear form."""
    import torch.distributed as dist

    n = q.shape[1]
    out = q.new_empty(n * n * group.size())
    dist.all_gather_into_tensor(out, q.new_empty(n * n), group=group)
    return q * 1


def chunked(q, k, v, *, causal, group):
    """One all-reduce per 64 tokens: calls that grow with the length."""
    import torch.distributed as dist

    for _ in range(q.shape[1] // 64):
        dist.all_reduce(q.new_empty(64), group=group)
    return q * 1


@pytest.mark.parametrize("fn", [squared, chunked])
def test_a_plugin_off_the_forms_is_traced_at_each_length(fn, monkeypatch):
    """The third length disagrees with the form (bytes n^2) or the first two differ in calls: every length is then
    traced, and that is said once."""
    traced.register(fn.__name__, fn)
    shape = {k: v for k, v in SHAPE.items() if k != "seq"}
    taken = counting_traces(monkeypatch)
    with pytest.warns(UserWarning, match=f"{fn.__name__} at 8 ranks: .*; each sequence length is traced"):
        for seq in (1024, 2048, 512):
            traced.traces(fn.__name__, False, 8, (0, 7), seq=seq, **shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # said once: not again, at other lengths or rank counts
        for seq in (4096, 3072):
            got = traced.traces(fn.__name__, False, 8, (0, 7), seq=seq, **shape)
            assert got == tuple(DIRECT(fn, False, 8, r, seq=seq, **shape) for r in (0, 7))
        for seq in (1024, 2048, 512):
            traced.traces(fn.__name__, False, 16, (0, 15), seq=seq, **shape)
    assert len(taken) == 2 * (3 + 2 + 3)  # every length traced


def test_what_the_fast_tracer_does_not_mirror_is_traced_by_torchs_counter(monkeypatch):
    """An op it meets that it does not mirror (a higher-order op; here: any communication op) sends the whole trace
    to FlopCounterMode under Traffic, on fresh inputs: the same result as asking for it."""
    from ringx_costmodel import counting

    fn = registered("as-plugin-ring")
    want = traced.trace_calls(fn, True, 8, 7, reference=True, **SHAPE)
    classify = counting.Tracer._classify

    def unusual(self, func):
        if str(func.overloadpacket).startswith("c10d."):
            raise counting.Unusual(str(func))
        return classify(self, func)

    made, reference = [], counting.Reference

    def counted():
        made.append(1)
        return reference()

    monkeypatch.setattr(counting.Tracer, "_classify", unusual)
    monkeypatch.setattr(counting, "Reference", counted)
    assert traced.trace_calls(fn, True, 8, 7, **SHAPE) == want
    assert made == [1]  # the fast tracer gave up, torch's counter traced


def test_a_length_the_plugins_layout_cannot_split_is_refused_in_one_line():
    """Neither traced nor derived: PyTorch CP's causal layout (our zigzag) needs two chunks a rank."""
    from ringx_drivers.peers import torch_cp

    traced.register("tcp-split", torch_cp.allgather)
    with pytest.raises(traced.CannotTrace, match="cannot be split in tcp-split's zigzag layout over 8 ranks"):
        traced.traces("tcp-split", True, 8, (0,), batch=1, seq=8 * 3, heads=4, kv_heads=4, head_dim=8)
    assert traced.traces("tcp-split", False, 8, (0,), batch=1, seq=8 * 3, heads=4, kv_heads=4, head_dim=8)
