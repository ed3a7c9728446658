"""transformers models under ringx (ringx/integrations/transformers.py): Llama, Qwen3, Mistral (window) and gpt-oss
(sinks, alternating window, MoE) exact in float64 against the same model unsharded, at 1, 2 and 4 ranks (every
rank's loss, gradients and logits); each layer's mask against transformers' own mask functions; bad input refused
in one line on every rank; ringx imports without transformers. The cases: tests/hf_cases.py (RINGX_TEST_FULL=1: every
algorithm on both batches)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

pytest.importorskip("transformers")

import ringx  # noqa: E402
from ringx import RingxInputError  # noqa: E402
from ringx.integrations import transformers as rxt  # noqa: E402
from ringx_drivers.drivers.step import compare  # noqa: E402
from ringx_drivers.models import hf  # noqa: E402
from ringx_suite.store import Store, validate  # noqa: E402
from tests import zygote  # noqa: E402
from tests.hf_cases import ALGORITHMS, ARCHS, BATCH, RANKS_PER_NODE, SEQ, TOL, case_id, cases, documents  # noqa: E402
from tests.mpi import CHECKOUT, launch, matrix_launcher  # noqa: E402

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


@pytest.fixture(scope="module", autouse=True)
def warm_transformers():
    """This file's ranks fork from the session's zygote with transformers imported (tests/zygote.py): ~3 s less per
    rank; the zygote imports it at this file's first launch, so other files' sessions never pay it."""
    os.environ[zygote.WARM_MORE] = "transformers.modeling_utils,transformers.models.auto.modeling_auto"
    yield
    os.environ.pop(zygote.WARM_MORE, None)
WORLDS = (2, 4)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    get = matrix_launcher(tmp_path_factory, "tests/workers/hf_cases.py", SEED, extras="never")
    return lambda world: get(world, RANKS_PER_NODE.get(world, 0))[0]


@pytest.mark.parametrize("world", WORLDS)
def test_every_rank_matches_the_unsharded_float64_model(launched, world):
    by_case = launched(world)
    want = cases(world, SEED)
    assert {c[1] for c in want} >= set(ALGORITHMS) and {c[0] for c in want} == set(ARCHS)
    for arch, algo, packed in want:
        rows = by_case[case_id(world, arch, algo, packed)]
        assert sorted(r["rank"] for r in rows) == list(range(world)), "a rank reported nothing"
        for r in rows:
            where = f"{arch} {algo} {'packed ' + str(r['documents']) if packed else 'plain'} rank {r['rank']} " \
                    f"(seed {SEED})"
            assert r["loss_error"] <= TOL, f"{where}: loss error {r['loss_error']:.2e}"
            assert r["grad_error"] <= TOL, f"{where}: gradient error {r['grad_error']:.2e} in {r['worst']}"
            assert r["logit_error"] <= TOL, f"{where}: this rank's logits off by {r['logit_error']:.2e}"


BAD = {"indivisible": "must be a multiple of 4", "rows-pack-differently": "pack different documents",
       "ulysses-heads": "3 query heads do not divide", "softcap": "soft-capping",
       "unknown-algorithm": "unknown algorithm 'ringz'", "no-batch": "needs the sharded batch"}


def test_bad_input_is_one_line_on_every_rank_and_no_rank_is_left_waiting(launched):
    by_case = launched(2)
    for name, text in BAD.items():
        rows = by_case[f"bad-{name}"]
        assert len(rows) == 2 and rows[0]["message"] == rows[1]["message"], rows
        msg = rows[0]["message"]
        assert text in msg and "\n" not in msg, f"{name}: {msg!r}"
    assert [r["loss"] > 0 for r in by_case["after-bad"]] == [True, True]  # a step after them all, on both ranks


def test_one_rank_is_exact(group):
    """Two of the architectures (turning with the seed; RINGX_TEST_FULL=1: all four), one algorithm each."""
    docs = documents(SEED)
    for a, arch in enumerate(ARCHS):
        if os.environ.get("RINGX_TEST_FULL") != "1" and (a - SEED) % 2:
            continue
        cfg = hf.make_config(arch)
        packed = docs if (a + SEED) % 2 else None
        ids, pos, labels = hf.global_batch(cfg, BATCH, SEQ, SEED, packed)
        ref_loss, ref_grads, _ = hf.reference_step(cfg, ids, pos, labels, SEED, packed)
        algo = ALGORITHMS[(a + SEED) % len(ALGORITHMS)]
        loss, grads, _ = hf.sharded_step(cfg, ids, pos, labels, SEED, algo)
        loss_err, grad_err, worst = compare(loss, grads, ref_loss, ref_grads)
        assert max(loss_err, grad_err) <= TOL, f"{arch} {algo}: {loss_err:.1e} {grad_err:.1e} {worst} (seed {SEED})"


def test_the_float64_loss_is_transformers_own_loss(group):
    """The loss here keeps the logits' dtype; transformers' casts them to float32 first: equal to float32's rounding."""
    cfg = hf.make_config("llama")
    ids, pos, labels = hf.global_batch(cfg, BATCH, SEQ, SEED, documents(SEED))
    ref_loss = hf.reference_step(cfg, ids, pos, labels, SEED)[0]
    own = hf.build(cfg, SEED)(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss.item()
    assert abs(own - ref_loss) <= 1e-6 * abs(ref_loss)


@pytest.mark.parametrize("window", [None, 1, 3, 6, 40])
def test_each_layer_mask_is_transformers_mask(window):
    """ringx's Mask of a layer sees what transformers' own mask functions show (documents from position_ids)."""
    from transformers.masking_utils import (
        and_masks,
        causal_mask_function,
        packed_sequence_mask_function,
        sliding_window_causal_mask_function,
    )

    docs = documents(SEED, 32)
    pos = torch.cat([torch.arange(n) for n in docs])[None]
    packed = torch.diff(pos, prepend=pos[:, :1] - 1, dim=-1).ne(1).cumsum(-1)
    fn = sliding_window_causal_mask_function(window) if window else causal_mask_function
    fn = and_masks(fn, packed_sequence_mask_function(packed))
    zero = torch.tensor(0)
    theirs = fn(zero, zero, torch.arange(32)[:, None], torch.arange(32)[None]).expand(32, 32)
    mine = rxt.layer_mask(32, rxt.document_lengths(pos), window, True)
    assert torch.equal(mine.visible(torch.arange(32), torch.arange(32)), theirs)


def test_labels_are_shifted_before_sharding():
    """A shard's last token is labelled with the next shard's first token (zigzag at 2 ranks)."""
    labels = torch.arange(16)[None]
    shifted = rxt.shift_labels(labels)
    assert shifted[0, :-1].tolist() == list(range(1, 16)) and shifted[0, -1] == rxt.IGNORE
    rank0 = ringx.shard(shifted, "zigzag", 0, 2)
    assert rank0[0].tolist() == [1, 2, 3, 4, 13, 14, 15, -100]  # chunks 0 and 3 of 4


def test_usp_layout_needs_its_degree_and_bidirectional_layers_are_refused(group):
    from ringx.launch import known_ranks_per_node

    assert rxt.ContextParallel("usp", ulysses_degree=1).layout == "zigzag-u1"
    if known_ranks_per_node() is None:  # this process never ran ringx.launch.init()
        with pytest.raises(RingxInputError, match="pass ulysses_degree= to parallelize"):
            rxt.ContextParallel("usp").layout  # noqa: B018
    with pytest.raises(RingxInputError, match="runs causal LMs"):
        rxt.layer_mask(32, None, None, False)


def test_a_version_outside_the_tested_range_is_refused_in_one_line():
    assert rxt.check_version("5.23.1") == "5.23.1"
    with pytest.raises(RingxInputError, match=r"^transformers 4\.57\.1 is not a release ringx was tested with") as e:
        rxt.check_version("4.57.1")
    assert "\n" not in str(e.value)
    assert rxt.check_version("5.30.0", allow_untested=True) == "5.30.0"


def test_ringx_imports_and_runs_without_transformers(monkeypatch):
    """No module of ringx imports transformers at its top level (only inside functions of the integration), and
    without it the integration says what to install in one line."""
    import ast

    for f in (CHECKOUT / "ringx").rglob("*.py"):
        for node in ast.parse(f.read_text()).body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n.split(".")[0] == "transformers" for n in names), f"{f} imports transformers"
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(RingxInputError) as e:
        rxt.register()
    assert str(e.value) == "ringx.integrations.transformers needs transformers: pip install 'ringx-bench[hf]'"

# ------------------------------------------------------------------------------- the docs' example, bench model --hf


def _example() -> str:
    text = (CHECKOUT / "docs" / "transformers.md").read_text()
    return text.split("## A worked example")[1].split("```python\n")[1].split("```")[0]


def test_the_docs_example_runs_as_written_and_gives_the_unsharded_loss(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_example())
    proc = launch(2, [str(script)], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = float(proc.stdout.split("loss ")[1].split()[0])
    # the same model and batch unsharded, transformers' own loss (float32, as the example)
    import transformers

    config = transformers.Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (1, 256), generator=g)
    pos = torch.cat([torch.arange(100), torch.arange(156)])[None]
    labels = ids.clone()
    labels[0, 100] = -100
    want = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss.item()
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)


def test_bench_model_hf_times_a_checked_transformers_step(tmp_path):
    """A user's own config.json (a gpt-oss: sinks, alternating windows, MoE) through bench model at 2 ranks, timed
    under bfloat16 autocast with activation checkpointing (the check runs in float64 first)."""
    cfg = hf.make_config("gpt-oss").to_dict()
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(cfg))
    proc = launch(2, ["-m", "ringx_bench", "model", "--hf-config", str(path), "--layers", "2", "--seq", "32",
                      "--algorithms", "zigzag,usp", "--warmup", "0", "--iters", "2", "--check", "--dtype",
                      "bfloat16", "--checkpoint", "--out",
                      str(tmp_path), "--campaign", "c", "--quiet"], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = Store(tmp_path, "c").records()
    assert sorted(r["algorithm"] for r in recs) == ["usp", "zigzag"]
    for r in recs:
        assert validate(r) == [] and r["status"] == "ok", r
        assert r["kind"] == "model" and r["model"] == "hf:mine" and r["arch"] == "gpt-oss" and r["hf"] == "mine"
        assert r["dtype"] == "bfloat16" and r["checkpoint"] and r["median_s"] > 0
        assert r["hf_config"]["layer_types"] == ["sliding_attention", "full_attention"]
        assert r["mask"] == "layers:window:5/causal"  # its layers' own masks (a window of 6 keys: 5 back)
        assert r["check_loss_error"] <= TOL and r["check_grad_error"] <= TOL and r["check_seq"] == 32
        assert r["bytes_sent_per_rank"] and min(r["bytes_sent_per_rank"]) > 0  # the ledger saw every layer's calls


HF_MISTAKES = [(["--hf", "llama", "--mask", "window:4"], "--hf runs the model's own masks"),
               (["--hf", "llama", "--seq", "31"], "cannot be split for ring"),
               (["--hf-config", "/nonexistent/config.json"], "--hf-config /nonexistent/config.json: cannot read it"),
               (["--hf", "qwen3", "--arch", "vit"], "run causal LMs: drop --arch"),
               (["--hf", "qwen3", "--preset", "tiny"], "take the place of --preset"),
               (["--hf", "llama", "--heads", "3", "--kv-heads", "1", "--d-model", "24", "--algorithms", "ulysses"],
                "3 query heads do not divide over 2 ranks")]


@pytest.mark.parametrize("args,message", HF_MISTAKES, ids=[m[1][:24] for m in HF_MISTAKES])
def test_bench_model_hf_refuses_mistakes_in_one_line(args, message):
    """Each raises UserError while the flags are read, alike on every rank and before any collective (the driver
    skeleton prints rank 0's line: tests/test_model_step.py checks that under mpiexec)."""
    from ringx_drivers.drivers.step import resolve
    from ringx_suite.cli import UserError

    with pytest.raises(UserError) as e:
        resolve([*args, "--campaign", "c"], world=2)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bench_model_hf_in_a_sweep_renders_its_flags(tmp_path):
    from ringx_drivers import sweeps as sweep
    from ringx_drivers.sweeps import plan

    f = tmp_path / "s.toml"
    f.write_text(f'campaign = "h"\nmachine = "local"\ndriver = "model"\nnodes = 1\nranks_per_node = 2\n'
                 f'out = "{tmp_path}"\n[params]\nhf = ["llama", "gpt-oss"]\nalgorithms = ["ring", "usp"]\nseq = 32\n')
    sw = sweep.load(f)
    text = plan.write_job(sw, sw.jobs[0], sw.jobs[0].points).read_text()
    runs = [line for line in text.splitlines() if "ringx-bench model " in line]
    assert len(runs) == 2 and all("--preset" not in r for r in runs), runs
    assert "--hf llama" in runs[0] and "--hf gpt-oss" in runs[1]
    qwen = hf.model_of(None, "qwen3-32b", {"layers": 2})
    assert (qwen.heads, qwen.kv_heads, qwen.head_dim, qwen.d_model, qwen.layers) == (64, 8, 128, 5120, 2)


def test_a_mixture_of_experts_is_sized_with_every_expert():
    """A sweep's memory estimate holds the weights, gradients and AdamW state of every expert, not of a dense MLP of
    the same width (gpt-oss-20b: 32 experts per layer)."""
    import torch
    import transformers

    from ringx_drivers.points import step as step_points

    moe = hf.model_of(None, "gpt-oss-20b", {"layers": 2})
    with torch.device("meta"):
        built = transformers.AutoModelForCausalLM.from_config(moe.hf)
    assert step_points.param_count(moe) == sum(p.numel() for p in built.parameters())
    experts = sum(p.numel() for n, p in built.named_parameters() if ".experts." in n)
    assert experts > 0.5 * step_points.param_count(moe)  # most of its weights are experts the estimate must hold
