"""``ringx-bench kernels``: the compute side, as `bench collectives` is the network's.

Every local kernel that runs here, at every block length, causal and full,
each dtype and GQA ratio: forward and backward (given the forward's out and
LSE) timed separately, TFLOP/s by the flash-attention convention (forward
4*B*S^2*H*D, halved when causal). The kernels of one configuration take turns in every
iteration, in rotating order, so their ratios are side by side. Records go to
the same store as `bench run` (kind "kernel"); the cost model reads them for
its compute term, and `ringx-bench figures` draws TFLOP/s against block
length.

Defaults follow the device: on a GPU blocks of 512 to 32768 tokens, 32 heads
(32 and 8 K/V heads), head_dim 128, bf16; on a CPU 256 to 2048 tokens, 8
heads, head_dim 64, float32; full and causal blocks both.

Example (one GPU):  ringx-bench kernels --campaign h100-kernels
"""

from __future__ import annotations

import argparse
import statistics
import sys

from ringx_drivers import options
from ringx_drivers.driver import Driver, Invocation, add_output_arguments, given_options, mpi_main
from ringx_drivers.measure.ranks import describe
from ringx_suite.cli import Parser, UserError, split_list

PROG = "ringx-bench kernels"
GPU = dict(block="512,1024,2048,4096,8192,16384,32768", heads=32, kv_heads="32,8", head_dim=128, dtype="bfloat16")
CPU = dict(block="256,512,1024,2048", heads=8, kv_heads="8,2", head_dim=64, dtype="float32")
CAUSAL = [False, True]  # both by default: the cost model reads full and causal blocks alike
SETTINGS = ("warmup", "iters", "timeout", "device")  # the skeleton's, with their one default each
BY_DEVICE = {k: f"{GPU[k]} on GPUs, {CPU[k]} on CPUs" for k in ("heads", "kv_heads", "head_dim", "dtype")}


def build_parser() -> Parser:
    P = options.PARAMS
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("--kernels", help="comma-separated kernel names (default: every kernel that runs here)")
    p.add_argument("--block", help=f"block lengths (tokens of one block's queries and keys), comma-separated "
                   f"(default: {GPU['block']} on GPUs, {CPU['block']} on CPUs)")
    p.add_argument("--seq", help=argparse.SUPPRESS)  # renamed --block: a clear error, not argparse's
    blocks = p.add_argument_group("each block (lists are crossed)")
    options.add_arguments(blocks, [P[k] for k in ("heads", "kv_heads", "head_dim", "dtype", "batch", "mask")],
                          BY_DEVICE)
    options.add_arguments(blocks, [P["causal"]], {"causal": "false,true"})
    options.add_arguments(p.add_argument_group("measurement"), [options.SETTINGS[k] for k in SETTINGS])
    add_output_arguments(p, campaign="kernels")
    return p


def configs(given: dict, device_type: str) -> list[dict]:
    """Every (dtype, kv_heads, masking, block) the options ask for, validated (UserError in one line)."""
    P = options.PARAMS
    d = GPU if device_type == "cuda" else CPU

    def many(name: str, option: options.Option):
        return options.value(option, given.get(name, d.get(name)), "", many=True)

    blocks = many("block", options.Option("block", None, "", int, low=1))
    kvs, dtypes = many("kv_heads", P["kv_heads"]), many("dtype", P["dtype"])
    heads = options.value(P["heads"], given.get("heads", d["heads"]), "")
    hd = options.value(P["head_dim"], given.get("head_dim", d["head_dim"]), "")
    batch = options.value(P["batch"], given.get("batch", P["batch"].default), "")
    for k in kvs:
        if heads % k:
            raise UserError(f"--heads ({heads}) must be a multiple of every --kv-heads ({k})")
    maskings = block_masks(many("mask", P["mask"]), many("causal", P["causal"]), max(blocks))
    return [dict(dtype=dt, kv_heads=kv, **({"causal": c} if isinstance(c, bool) else {"causal": c.is_causal,
                                                                                     "mask": str(c)}),
                 seq=s, heads=heads, head_dim=hd, batch=batch)
            for dt in dtypes for kv in kvs for c in maskings for s in blocks]


def block_masks(specs: list[str] | None, causals: list[bool] | None, block: int) -> list:
    """The blocks' maskings (ringx_suite.masks.reconcile, kernels' default both): True/False for causal/full, a
    ringx.Mask for a window (one band block). Documents are many blocks, not one kernel call: refused (bench run
    times them)."""
    from ringx_drivers.quick import band_of
    from ringx_suite import masks

    out = []
    for x in masks.reconcile(specs, causals, CAUSAL):
        m = masks.parse(x, block, 0)
        if m.plain is None and band_of(m) is None:
            raise UserError(f"--mask {x}: bench kernels times one block, so it takes full, causal and window:L[,R] "
                            "(a document mask is many blocks: time it with bench run)")
        out.append(m.plain if m.plain is not None else m)
    return list(dict.fromkeys(out))


def _call(kern, direction: str, q, k, v, do, causal: bool, scale: float, band=None):
    """One forward, or one backward given the forward's out and LSE (computed once, untimed); ``band``: a window
    as the block's band (the kernel's own band path, or the fallback it routes to)."""
    kw = {}
    if band is not None:
        kern, kw = kern.for_band(q, k.shape[1], band), {"band": band}
    if direction == "fwd":
        return lambda: kern.forward(q, k, v, causal, scale, **kw)
    out, lse = kern.forward(q, k, v, causal, scale, **kw)
    return lambda: kern.backward(do, q, k, v, out, lse, causal, scale, **kw)


def _mask(cfg: dict):
    """The configuration's ringx.Mask (full/causal, or its window)."""
    import ringx

    if "mask" in cfg:
        return ringx.Mask.parse(cfg["mask"])
    return ringx.Mask.causal() if cfg["causal"] else ringx.Mask.full()


class Kernels(Driver):
    """Every kernel's forward and backward per configuration, the kernels of one taking turns."""

    prog, command, kind = "bench kernels", "kernels", "kernel"

    def __init__(self, inv: Invocation, given: dict):
        super().__init__(inv)
        self.given = given

    def before_campaign(self) -> None:
        self.cfgs = configs(self.given, self.ctx.device.type)

    def open(self, **kw) -> None:  # no claims: kernel runs may share a campaign; no signal handler (as ever)
        super().open(claims=False, signals=False)

    def run(self) -> None:
        import torch

        import ringx
        from ringx.flops import CONVENTION, mask_flops
        from ringx_drivers.measure.timing import time_round_robin
        from ringx_drivers.quick import band_of
        from ringx_suite.stats import stat_fields
        from ringx_suite.store import already_recorded, config_key, now

        s, group, store = self.settings, self.group, self.store
        dev = self.ctx.device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
        progress = self.progress_for(len(self.cfgs))
        progress.note(f"bench kernels: {len(self.cfgs)} configurations on {name or 'cpu'} -> {store.records_path}")
        for cfg in self.cfgs:
            dt = getattr(torch, cfg["dtype"])
            wanted = split_list(self.given["kernels"]) if self.given.get("kernels") else list(ringx.KERNELS)
            kerns = [ringx.KERNELS[k] for k in wanted
                     if ringx.KERNELS[k].supports(dev, dt, cfg["head_dim"]) and k != "reference"]
            mask = _mask(cfg)
            label = (f"seq {cfg['seq']} {mask} {cfg['dtype']} "
                     f"{cfg['heads']}/{cfg['kv_heads']} heads")
            cases = []
            for k in kerns:
                for direction in ("fwd", "bwd"):
                    c = {"kernel": k.name, "direction": direction, **cfg, "world_size": self.P, "nodes": self.nodes,
                         "warmup": s.warmup, "iters": s.iters}
                    key = config_key(c)
                    if already_recorded(self.done.get(key), self.output.retry_failed):
                        continue
                    cases.append((k, direction, key, c))
            if not cases:
                progress.step(f"{label}: already recorded" if kerns else f"{label}: no kernel runs it here")
                continue
            err = None
            try:
                g = torch.Generator(device="cpu").manual_seed(7)
                b, sq, h, hk, d = cfg["batch"], cfg["seq"], cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
                q, do = (torch.randn(b, sq, h, d, generator=g, dtype=dt).to(dev) for _ in range(2))
                k_, v_ = (torch.randn(b, sq, hk, d, generator=g, dtype=dt).to(dev) for _ in range(2))
                causal = bool(mask.plain)
                fns = [_call(kern, direction, q, k_, v_, do, causal, d**-0.5, band_of(mask))
                       for kern, direction, _, _ in cases]
                samples = time_round_robin(fns, s.warmup, s.iters, dev)
            except Exception as e:  # noqa: BLE001 - failures are records
                err = describe(e)
            votes = group.agree(err is None, {"error": err[1] if err else None, "kind": err[0] if err else None},
                                waited=bool(err) and err[0] == "timeout")
            if votes is None:
                group.give_up(group.timeout_message(label))
            bad = [(i, v) for i, v in enumerate(votes) if not v["ok"]]
            for j, (kern, direction, key, c) in enumerate(cases):
                rec = self.header(key, written_at=now(), kernel_version=kern.version(), device=dev.type,
                                  device_name=name, **c)
                if bad:
                    rec.update(status="failed", failure=bad[0][1]["kind"], failed_ranks=[i for i, _ in bad],
                               error="; ".join(f"rank {i}: {v['error']}" for i, v in bad))
                else:
                    st = stat_fields(samples[j])
                    flops = mask_flops(c["batch"], c["seq"], c["heads"], c["head_dim"], mask, direction)
                    rec.update(samples_s=samples[j], **st, flops=flops, flops_convention=CONVENTION,
                               tflops=flops / st["median_s"] / 1e12)
                if self.rank == 0:
                    store.append(rec)
            if bad:
                progress.step(f"{label}: FAILED ({bad[0][1]['error']})")
                self.reinit()
            else:
                tf = [f"{kk.name} {dd} "
                      f"{mask_flops(b, sq, h, d, mask, dd) / statistics.median(sm) / 1e12:.2f}"
                      for (kk, dd, _, _), sm in zip(cases, samples)]
                progress.step(f"{label}: " + ", ".join(tf) + " TFLOP/s")
        progress.note(f"bench kernels: done -> {store.records_path}")


def make(argv: list[str], world: int) -> Kernels:
    """The checked command line (every rank alike, before any collective)."""
    import ringx

    valid = {"kernels", "block", "seq", *options.PARAMS, *SETTINGS, *options.OUTPUT}
    given = given_options(build_parser(), argv, valid)
    if "seq" in given:
        raise UserError("--seq is --block in bench kernels (the length of one block)")
    for k in split_list(given.get("kernels") or ""):
        if k not in ringx.KERNELS:
            raise UserError(f"unknown kernel {k!r}; choose from {', '.join(ringx.KERNELS)}")
    configs(given, "cpu")  # the options' mistakes now, on every rank, before a process group exists
    return Kernels(Invocation.of(given, argv, campaign="kernels"), given)


def main(argv: list[str] | None = None) -> int:
    return mpi_main(PROG, argv, make)


if __name__ == "__main__":
    sys.exit(main())
