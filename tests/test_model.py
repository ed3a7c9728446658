"""The cost model: simulation semantics, monotone behaviour, calibration on synthetic records, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringx.schedule import Event
from ringx_analysis import calibrate
from ringx_costmodel import Link, Machine, predict, simulate
from ringx_costmodel import network as model
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
SHAPE = dict(seq=4096, heads=8, kv_heads=2, head_dim=64, dtype="bfloat16")
ALGOS = ["ring", "zigzag", "stripe", "ringx1", "ringx2", "ringx3", "ringx4", "ringx1o", "ringx2o", "ringx4o"]


def machine(flops=1e12, alpha=5e-6, bw=50.0) -> Machine:
    return Machine("m", "test", flops, {"default": Link(alpha, bw)})


def test_simulation_semantics():
    m = machine(flops=1e9, alpha=0.0, bw=1.0)  # 1 GFLOP/s, 1 GB/s
    comp = Event("compute", flops=1e9)  # 1 s
    blocking = Event("comm", op="sendrecv", nbytes=10**9, blocking=True, index=0)  # 1 s
    assert simulate([[comp]], m, 1, 1).total_s == pytest.approx(1.0)
    assert simulate([[comp, blocking], [blocking]], m, 2, 1).total_s == pytest.approx(2.0)  # waits for rank 0
    hidden = [Event("comm", op="sendrecv", nbytes=10**9, blocking=False, index=0), comp, Event("wait", index=0)]
    p = simulate([hidden, hidden], m, 2, 1)
    assert p.total_s == pytest.approx(1.0) and p.exposed_comm_s == pytest.approx(0.0)  # overlapped
    two = [Event("comm", op="sendrecv", nbytes=10**9, blocking=False, index=0),
           Event("comm", op="sendrecv", nbytes=10**9, blocking=False, index=1), comp,
           Event("wait", index=0), Event("wait", index=1)]
    assert simulate([two, two], m, 2, 1).total_s == pytest.approx(2.0)  # in flight together, one after the other
    slow = simulate([[comp, comp, blocking], [comp, blocking]], m, 2, 1)
    assert slow.total_s == pytest.approx(3.0) and slow.imbalance_s == pytest.approx(0.5)


def test_latency_steps_per_operation():
    # rings pay P-1 steps; all_reduce a tree's 2 log2 P (what NCCL and gloo pick for the small LSE
    # all-reduces: a ring would charge ringx2 thousands of 2(P-1)-step all-reduces at scale)
    assert [model.hops("all_gather", p) for p in (2, 4096)] == [1, 4095]
    assert [model.hops("reduce_scatter", p) for p in (3, 4096)] == [2, 4095]
    assert [model.hops("all_reduce", p) for p in (2, 5, 4096)] == [2, 6, 24]
    assert [model.hops("broadcast", p) for p in (2, 4096)] == [1, 12] == [model.hops("reduce", p) for p in (2, 4096)]
    assert model.hops("sendrecv", 4096) == 1


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("causal", [False, True])
def test_more_bandwidth_is_never_slower_and_more_work_never_faster(algorithm, causal):
    def t(m, **kw):
        return predict(algorithm, causal, "fwd+bwd", 4, m, **{**SHAPE, **kw}).total_s

    base = t(machine())
    assert t(machine(bw=500.0)) <= base <= t(machine(bw=5.0))
    assert t(machine(alpha=0.0)) <= base <= t(machine(alpha=1e-3))
    assert t(machine(flops=1e13)) <= base <= t(machine(flops=1e11))
    assert base <= t(machine(), seq=8192) and base <= t(machine(), heads=16)


def test_balanced_layouts_remove_the_causal_imbalance():
    m = machine()
    ring = predict("ring", True, "fwd+bwd", 8, m, **SHAPE)
    zig = predict("zigzag", True, "fwd+bwd", 8, m, **SHAPE)
    assert ring.imbalance_s > 0.3 * ring.total_s and zig.imbalance_s < 1e-9
    assert zig.total_s < ring.total_s


def test_calibration_recovers_known_parameters():
    pd = pytest.importorskip("pandas")
    truth = {"broadcast": (7e-6, 20.0), "all_reduce": (3e-6, 40.0), "sendrecv": (11e-6, 9.0)}
    rows = []
    for op, (alpha, bw) in truth.items():
        for p in (2, 4, 8):
            for nbytes in (1 << 10, 1 << 14, 1 << 18, 1 << 22, 1 << 26):
                t = model.hops(op, p) * alpha + nbytes * model.busbw_factor(op, p) / (bw * 1e9)
                rows.append({"kind": "collective", "status": "ok", "op": op, "world_size": p, "bytes": nbytes,
                             "median_s": t})
    links, fit = calibrate.fit_links(pd.DataFrame(rows))
    for op, (alpha, bw) in truth.items():
        assert links[op].alpha_s == pytest.approx(alpha, rel=1e-6) and links[op].bw_GBps == pytest.approx(bw, rel=1e-6)
    assert (fit["worst_rel_err"] < 1e-9).all()
    one = pd.DataFrame([{"kind": "attention", "status": "ok", "world_size": 1, "batch": 1, "seq": s, "heads": 8,
                         "head_dim": 64, "causal": c, "mode": "fwd+bwd",
                         "median_s": 4.0 * 8 * 64 * (s * (s + 1) / 2 if c else s * s) * 3.5 / 5e10}
                        for s in (512, 1024) for c in (False, True)])
    assert calibrate.fit_throughput(one) == pytest.approx(5e10)


def test_validate_and_predict_cli():
    proc = run_cli("validate", "results/local-demo", "--cores-per-node",
                   "2", "--out", "/tmp/ringx-model-test")
    assert proc.returncode == 0, proc.stderr
    assert "| algorithm | ranks | sample | points | median_rel_err | worst_rel_err |" in proc.stdout
    assert "| measured_fastest | predicted_fastest | right | spearman |" in proc.stdout
    assert all(f"| {a} |" in proc.stdout for a in ("ring", "zigzag", "ringx3", "ringx4o"))
    proc = run_cli("sweep", "predict", "jobs/sweeps/local-demo.toml",
                   "--machine", "perlmutter")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| N1x")]
    assert len(rows) == 150 and sum("| yes |" in r for r in rows) == 12  # one fastest per configuration
    proc = run_cli("predict", "--machine", "frontier", "--ranks", "8,64",
                   "--seq", "65536")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| 8 |", "| 64 |"))]
    # every causal algorithm at 8 ranks; at 64 all but ulysses (32 heads cannot spread over 64 ranks), said so
    n = len(__import__("ringx").algorithms.names(True))
    assert len(rows) == n + n - 1 and sum("| yes |" in r for r in rows) == 2
    assert "ulysses at 64 ranks: Ulysses degree 64 must divide" in proc.stdout
    proc = run_cli("curve", "results/local-demo", "--machine", "frontier",
                   "--seq", "2048", "--max-ranks", "8", "--out", "/tmp/ringx-curve-test")
    assert proc.returncode == 0, proc.stderr
    predicted = [line for line in proc.stdout.split("measured")[0].splitlines() if line.startswith("| ringx")]
    assert len(predicted) == 2 * 4  # ranks 2 and 8, four ringX algorithms
    measured = proc.stdout.split("measured speedups from results/local-demo")[1]
    assert sum(line.startswith("| ringx") for line in measured.splitlines()) == 2 * 4  # at 2 and 4 local ranks
    assert (Path("/tmp/ringx-curve-test") / "speedup-curve-frontier.png").stat().st_size > 10_000
    proc = run_cli("curve", "--machine", "local")
    assert proc.returncode == 2 and "has no [model] table" in proc.stderr


def test_sub_group_collectives_wait_for_their_members_and_cost_their_own_link():
    # two nodes of two ranks; each node all-gathers inside (intra link), then rank pairs across (inter link)
    intra, inter = Link(1e-6, 100.0), Link(1e-3, 1.0)
    m = Machine("m", "test", 1e12, {"default": intra}, {"default": inter})
    ev = []
    for r in range(4):
        node = (r // 2) * 2
        ev.append([Event("comm", op="all_gather", nbytes=1000, index=0, group=(node, node + 1), nodes=1),
                   Event("comm", op="all_gather", nbytes=1000, index=1, group=(r % 2, r % 2 + 2), nodes=2)])
    pred = simulate(ev, m, 4, 2)
    t_intra = model.hops("all_gather", 2) * 1e-6 + 1000 * 0.5 / 100e9
    t_inter = model.hops("all_gather", 2) * 1e-3 + 1000 * 0.5 / 1e9
    assert pred.total_s == pytest.approx(t_intra + t_inter)  # two intra groups run at once, not one after another


def test_kernel_records_give_the_compute_term_by_block_shape():
    import pandas as pd

    rows = [{"kind": "kernel", "status": "ok", "kernel": "torch-cpu", "direction": d, "causal": c, "seq": s,
             "tflops": t} for d in ("fwd", "bwd") for c in (False, True)
            for s, t in ((256, 1.0), (1024, 2.0), (4096, 4.0))]
    rates = calibrate.fit_kernel_rates(pd.DataFrame(rows))
    assert rates[("fwd", False)] == [(256, 1e12), (1024, 2e12), (4096, 4e12)]
    m = Machine("m", "test", 9e12, {"default": Link(0.0, 1.0)}, kernel_rates=rates)
    assert m.block_rate("fwd", False, 1024, 1024) == pytest.approx(2e12)
    assert m.block_rate("fwd", False, 2048, 2048) == pytest.approx(3e12)  # halfway in log(length)
    assert m.block_rate("bwd", True, 8192, 8192) == pytest.approx(4e12)  # flat beyond the largest block
    assert m.block_rate("fwd", False, 128, 128) == pytest.approx(0.5e12)  # a fixed cost per call below it
    assert Machine("m", "t", 9e12, {"default": Link(0.0, 1.0)}).block_rate("fwd", False, 64, 64) == 9e12
    # a small block costs more per FLOP than a large one: the one-number model could not say so
    ev = [[Event("compute", op="fwd", flops=1e12, seq_q=256, seq_k=256)]]
    assert simulate(ev, m, 1, 1).total_s == pytest.approx(1.0)


def test_the_model_picks_the_ulysses_degree_for_usp():
    from ringx_costmodel.predict import best_degree, degrees

    assert degrees("usp", 16, 8) == [1, 2, 4, 8] and degrees("ring", 16, 8) == [None]
    fast_intra = Machine("m", "t", 1e12, {"default": Link(1e-6, 100.0)}, {"default": Link(1e-3, 1.0)})
    kw = dict(nodes=2, seq=4096, heads=8, kv_heads=8, head_dim=64, exact_ranks=16)
    u, pred = best_degree("usp", True, "fwd+bwd", 16, fast_intra, **kw)
    assert u == 8  # Ulysses over the fast node-local links, the ring over the slow ones
    for other in (1, 2, 4):
        assert predict("usp", True, "fwd+bwd", 16, fast_intra, ulysses_degree=other, **kw).total_s > pred.total_s


def test_map_cli_names_the_fastest_algorithm_and_degrees(tmp_path):
    proc = run_cli("map", "--machines", "alps", "--seqs", "131072",
                   "--ranks", "8,64", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| alps |")]
    assert len(rows) == 2  # one fastest per cell
    import pandas as pd

    table = pd.read_csv(tmp_path / "fastest-map.csv")
    assert table.groupby(["seq", "ranks"])["fastest"].sum().eq(1).all()
    usp = table[(table["algorithm"] == "usp") & (table["ranks"] == 64)]
    assert len(usp) == 1 and 64 % int(usp["ulysses_degree"].iloc[0]) == 0
    assert (tmp_path / "fastest-map.png").stat().st_size > 10_000
    assert (tmp_path / "speedup-curves.png").stat().st_size > 10_000  # every algorithm against ranks
    assert set(table["algorithm"]) >= {"ring", "zigzag", "ringx3", "ringx3b", "usp", "usp-ringx"}


def test_kernel_rates_follow_the_busy_ranks_and_never_fall_with_block_length():
    import pandas as pd

    rows = [{"kind": "kernel", "status": "ok", "kernel": "torch-cpu", "direction": "fwd", "causal": False, "seq": s,
             "tflops": t / busy, "world_size": busy, "nodes": 1}
            for busy in (1, 8) for s, t in ((256, 2.0), (512, 1.0), (1024, 4.0))]
    df = pd.DataFrame(rows)
    assert calibrate.fit_kernel_rates(df, 8)[("fwd", False)] == [(256, 0.1875e12), (512, 0.1875e12), (1024, 0.5e12)]
    rows.append({"kind": "collective", "status": "ok", "op": "broadcast", "world_size": 2, "bytes": 1 << 20,
                 "median_s": 1e-3})
    m, _ = calibrate.calibrate(pd.DataFrame(rows), "t")
    assert sorted(m.loaded_rates) == [1, 8]
    assert m.block_rate("fwd", False, 1024, 1024, busy=1) == pytest.approx(4e12)
    assert m.block_rate("fwd", False, 1024, 1024, busy=6) == pytest.approx(0.5e12)  # nearest measured load: 8
    assert m.block_rate("fwd", False, 1024, 1024, busy=2) == pytest.approx(4e12)


def test_one_core_per_rank_serialises_asynchronous_transfers_with_compute():
    ev = [[Event("comm", op="sendrecv", nbytes=10**9, blocking=False, index=0),
           Event("compute", op="fwd", flops=1e12), Event("wait", index=0)] for _ in range(2)]
    link = {"default": Link(0.0, 1.0)}  # 1 s for the transfer, 1 s for the block
    assert simulate(ev, Machine("gpu", "t", 1e12, link), 2, 1).total_s == pytest.approx(1.0)
    assert simulate(ev, Machine("cpu", "t", 1e12, link, cores_per_rank=1), 2, 1).total_s == pytest.approx(2.0)
    assert simulate(ev, Machine("cpu", "t", 1e12, link, cores_per_rank=2), 2, 1).total_s == pytest.approx(1.0)


def test_links_are_fitted_per_rank_count_too():
    pd = pytest.importorskip("pandas")
    rows = [{"kind": "collective", "status": "ok", "op": "all_reduce", "world_size": p, "bytes": n,
             "median_s": model.hops("all_reduce", p) * alpha + n * model.busbw_factor("all_reduce", p) / 1e10}
            for p, alpha in ((2, 1e-5), (8, 4e-5)) for n in (1 << 10, 1 << 16, 1 << 22)]
    links, fit = calibrate.fit_links(pd.DataFrame(rows))
    assert links["all_reduce@2"].alpha_s == pytest.approx(1e-5) and links["all_reduce@8"].alpha_s == pytest.approx(4e-5)
    m = Machine("m", "t", 1e12, links)
    assert m.link("all_reduce", 1, 8) is links["all_reduce@8"] and m.link("all_reduce", 1, 4) is links["all_reduce"]
    assert set(fit["ranks"]) == {"all", "2", "8"}


def test_ranking_says_whether_the_fastest_was_predicted():
    import pandas as pd

    def cfg(p, times):  # algorithm -> (measured, measured p90, predicted)
        return [{"algorithm": a, "world_size": p, "seq": 1024, "causal": True, "mode": "fwd+bwd", "measured_s": m,
                 "measured_p90_s": q, "predicted_s": pr} for a, (m, q, pr) in times.items()]

    v = pd.DataFrame(cfg(2, {"a": (1.0, 1.1, 1.0), "b": (2.0, 2.1, 2.0), "c": (3.0, 3.1, 3.0)})
                     + cfg(4, {"a": (1.0, 1.1, 2.0), "b": (1.05, 1.2, 1.0), "c": (3.0, 3.1, 3.0)})
                     + cfg(8, {"a": (1.0, 1.1, 3.0), "b": (2.0, 2.1, 2.0), "c": (3.0, 3.1, 1.0)}))
    r = calibrate.ranking(v).set_index("ranks")
    assert list(r["right"]) == ["yes", "within noise", "no"]
    assert r.loc[2, "spearman"] == pytest.approx(1.0) and r.loc[8, "spearman"] == pytest.approx(-1.0)


def test_intra_and_inter_records_calibrate_their_own_links():
    pd = pytest.importorskip("pandas")
    rows = []
    for level, alpha, bw in (("intra", 1e-6, 100.0), ("inter", 1e-4, 5.0)):
        for g in (2, 4):
            for n in (1 << 12, 1 << 20, 1 << 24):
                t = model.hops("all_gather", g) * alpha + n * model.busbw_factor("all_gather", g) / (bw * 1e9)
                rows.append({"kind": "collective", "status": "ok", "op": "all_gather", "world_size": 8, "level": level,
                             "group_size": g, "bytes": n, "median_s": t})
    rows.append({"kind": "attention", "status": "ok", "world_size": 1, "batch": 1, "seq": 512, "heads": 8,
                 "head_dim": 64, "causal": False, "mode": "fwd", "median_s": 1e-3})
    m, fit = calibrate.calibrate(pd.DataFrame(rows), "two-level")
    assert m.intra["all_gather"].bw_GBps == pytest.approx(100.0) and m.inter["all_gather"].bw_GBps == pytest.approx(5.0)
    assert m.link("all_gather", 2).alpha_s == pytest.approx(1e-4)  # a group spanning nodes takes the inter link
    assert set(fit["level"]) == {"intra", "inter"}
