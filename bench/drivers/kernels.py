"""``ringx-bench kernels``: the compute side, as `bench collectives` is the network's.

Every local kernel that runs here, at every block length, causal and full,
each dtype and GQA ratio: forward and backward (given the forward's out and
LSE) timed separately, TFLOP/s by the flash-attention convention
(ringx/flops.py). The kernels of one configuration take turns in every
iteration, in rotating order, so their ratios are side by side. Records go to
the same store as `bench run` (kind "kernel"); the cost model reads them for
its compute term, and `ringx-bench figures` draws TFLOP/s against block
length.

Defaults follow the device: on a GPU 512 to 32768 tokens, 32 heads (32 and 8
K/V heads), head_dim 128, bf16; on a CPU 256 to 2048 tokens, 8 heads, head_dim
64, float32.

Launch, campaign, pinning and the record header are the skeleton's (bench/driver.py); this file holds the
kernels' own configurations, inputs, timed calls and record fields.

Example (one GPU):  ringx-bench kernels --campaign h100-kernels
"""

from __future__ import annotations

import statistics
import sys

from ringx_drivers import options
from ringx_drivers.driver import Driver, Invocation, add_output_arguments, output_of
from ringx_drivers.measure.ranks import describe
from ringx_drivers.options import DTYPES
from ringx_suite.cli import Parser, UserError, split_list

GPU = dict(seq="512,1024,2048,4096,8192,16384,32768", heads=32, kv_heads="32,8", head_dim=128, dtype="bfloat16")
CPU = dict(seq="256,512,1024,2048", heads=8, kv_heads="8,2", head_dim=64, dtype="float32")


def build_parser() -> Parser:
    p = Parser(prog="ringx-bench kernels", description=__doc__)
    p.add_argument("--kernels", help="comma-separated kernel names (default: every kernel that runs here)")
    p.add_argument("--seq", help="block lengths, comma-separated (default: by device, see above)")
    p.add_argument("--heads", type=int, help="query heads (default: 32 on GPUs, 8 on CPUs)")
    p.add_argument("--kv-heads", help="key/value head counts, comma-separated: the GQA ratios (default: by device)")
    p.add_argument("--head-dim", type=int, help="default: 128 on GPUs, 64 on CPUs")
    p.add_argument("--dtype", help=f"comma-separated, of {', '.join(DTYPES)} (default: bfloat16 on GPUs, float32 "
                   "on CPUs)")
    p.add_argument("--causal", help="false, true or both (default: both)")
    options.add_arguments(p, [options.PARAMS["mask"]])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations (default 3)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (default 10)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda when present")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a rank waits on its peers (default 300)")
    add_output_arguments(p, campaign="kernels")
    return p


def configs(a, device_type: str) -> list[dict]:
    """Every (dtype, kv_heads, causal, seq) the flags ask for, validated."""
    from ringx_drivers import options
    from ringx_suite.cli import parse_bool

    d = GPU if device_type == "cuda" else CPU
    try:
        seqs = [int(x) for x in split_list(a.seq or d["seq"])]
        kvs = [int(x) for x in split_list(a.kv_heads or str(d["kv_heads"]))]
        dtypes = split_list(a.dtype or d["dtype"])
        causals = [parse_bool(x) for x in split_list(a.causal or "false,true")]
    except ValueError as e:
        raise UserError(str(e)) from None
    windows = block_masks(a, seqs)
    if windows is not None:
        causals = windows
    heads, hd = a.heads or d["heads"], a.head_dim or d["head_dim"]
    for name, v in (("--heads", heads), ("--head-dim", hd), ("--batch", a.batch), *(("--seq", s) for s in seqs),
                    *(("--kv-heads", k) for k in kvs)):
        if v < 1:
            raise UserError(f"{name} must be positive, got {v}")
    for k in kvs:
        if heads % k:
            raise UserError(f"--heads ({heads}) must be a multiple of every --kv-heads ({k})")
    for dt in dtypes:
        options.value(options.PARAMS["dtype"], dt, "--dtype")
    if not 1 <= a.iters <= options.MAX_ITERS or not 0 <= a.warmup <= options.MAX_ITERS:
        raise UserError(f"--iters must be from 1 to {options.MAX_ITERS} and --warmup from 0 to {options.MAX_ITERS}")
    return [dict(dtype=dt, kv_heads=kv, **({"causal": c} if isinstance(c, bool) else {"causal": c.is_causal,
                                                                                     "mask": str(c)}),
                 seq=s, heads=heads, head_dim=hd, batch=a.batch)
            for dt in dtypes for kv in kvs for c in causals for s in seqs]


def block_masks(a, seqs: list[int]) -> list | None:
    """--mask as one block's maskings: True/False for causal/full, a ringx.Mask for a window (one band block);
    None without --mask. Documents are many blocks, not one kernel call: refused (bench run times them)."""
    from ringx_drivers.quick import band_of
    from ringx_suite import masks

    specs = options.value(options.PARAMS["mask"], a.mask, "--mask", many=True)
    if specs is None:
        return None
    if a.causal is not None:
        raise UserError("give --mask or --causal, not both (--causal true is --mask causal, false is --mask full)")
    out = []
    for x in specs:
        m = masks.parse(x, max(seqs), 0)
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


def main(argv: list[str] | None = None) -> int:
    from ringx_suite.cli import main as cli_main

    a = build_parser().parse_args(argv)
    return cli_main("ringx-bench kernels", lambda: run(a, argv or []))


class Kernels(Driver):
    """Every kernel's forward and backward per configuration, the kernels of one taking turns."""

    prog, command, kind = "bench kernels", "kernels", "kernel"

    def __init__(self, inv: Invocation, a):
        super().__init__(inv)
        self.a = a

    def before_campaign(self) -> None:
        self.cfgs = configs(self.a, self.ctx.device.type)

    def open(self, **kw) -> None:  # no claims: kernel runs may share a campaign; no signal handler (as ever)
        a = self.a
        super().open(claims=False, signals=False, launch_args={} if a.device == "auto" else {"device": a.device})

    def run(self) -> None:
        import torch

        import ringx
        from ringx.flops import CONVENTION, mask_flops
        from ringx_drivers.measure.timing import time_round_robin
        from ringx_drivers.quick import band_of
        from ringx_suite.stats import stat_fields
        from ringx_suite.store import already_recorded, config_key, now

        a, s, group, store = self.a, self.settings, self.group, self.store
        dev = self.ctx.device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
        progress = self.progress_for(len(self.cfgs))
        progress.note(f"bench kernels: {len(self.cfgs)} configurations on {name or 'cpu'} -> {store.records_path}")
        for cfg in self.cfgs:
            dt = getattr(torch, cfg["dtype"])
            wanted = split_list(a.kernels) if a.kernels else list(ringx.KERNELS)
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


def run(a, argv: list[str]) -> int:
    import ringx
    from ringx import launch

    out = output_of({k: v for k, v in vars(a).items() if v is not None}, campaign="kernels")
    if a.kernels:
        for k in split_list(a.kernels):
            if k not in ringx.KERNELS:
                raise UserError(f"unknown kernel {k!r}; choose from {', '.join(ringx.KERNELS)}")
    settings = options.Settings(warmup=a.warmup, iters=a.iters, timeout=a.timeout, device=a.device)
    driver = Kernels(Invocation(settings, out, tuple(argv)), a)
    driver.open()
    driver.run()
    launch.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
