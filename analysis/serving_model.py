"""`analysis serving`: predicted TTFT and TPOT of every decode schedule and of TP on a machine description,
over rank counts and cache lengths (costmodel.serving), as a table, a CSV and a figure."""

from __future__ import annotations

from pathlib import Path

from ringx_suite.cli import UserError

ALGORITHMS = "ring,zigzag,ringx1,ringx2,ringx3,ringx4,ulysses,usp,usp-ringx,tp"


def add_parser(sub) -> None:
    c = sub.add_parser("serving", help="predicted TTFT and TPOT per algorithm and tp on a machine (costmodel)",
                       description="Predicted serving times from a machine's published figures (not measurements): "
                                   "prefill (TTFT) and decode (TPOT) per algorithm and Megatron TP.")
    c.add_argument("--machine", default="frontier,perlmutter,alps", help="profile names (comma-separated)")
    c.add_argument("--preset", default="llama3-8b", help="a decoder of bench model's presets")
    c.add_argument("--layers", type=int, help="override the preset's layers (32: the whole Llama-3-8B)")
    c.add_argument("--ranks", default="8,16,32,64,128,256,512,1024,2048,4096")
    c.add_argument("--tokens", default="131072,1048576", help="cache (= prompt) lengths")
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--dtype", default="bfloat16")
    c.add_argument("--algorithms", default=ALGORITHMS)
    c.add_argument("--prefill-max-ranks", type=int, default=512,
                   help="trace the prefill up to this many ranks (tracing a 4096-rank ring takes minutes per case)")
    c.add_argument("--out", help="directory for the CSV and figures (default runs/serving-model)")


def _ints(text: str, name: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise UserError(f"--{name} takes comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise UserError(f"--{name} takes positive integers, got {text!r}")
    return out


def predict_table(machine_name: str, model, ranks: list[int], tokens: list[int], algorithms: list[str], *,
                  batch: int, dtype: str, prefill_max_ranks: int, progress=print):
    """One row per (algorithm, ranks, tokens) that can run; the reasons for those that cannot."""
    import pandas as pd

    from ringx_costmodel import machine as machines
    from ringx_costmodel.serving import predict_serving

    machine, gpn = machines.load(machine_name)
    rows, cannot = [], set()
    for s in tokens:
        for p in ranks:
            progress(f"{machine.name}: {s} tokens at {p} ranks")
            for a in algorithms:
                try:
                    r = predict_serving(a, p, machine, gpus_per_node=gpn, model=model, cache_tokens=s, batch=batch,
                                        dtype=dtype, prefill=p <= prefill_max_ranks)
                except ValueError as e:
                    cannot.add(str(e))
                    continue
                rows.append({"machine": machine.name, **vars(r)})
    return pd.DataFrame(rows), sorted(cannot)


def _figure(df, title: str):
    import matplotlib.pyplot as plt

    tokens = sorted(df["cache_tokens"].unique())
    fig, axes = plt.subplots(2, len(tokens), figsize=(4.2 * len(tokens), 6.4), squeeze=False, sharex=True)
    label = {"ring": "ring schedule (ring, zigzag, stripe)", "allreduce": "ringX all-reduce (ringx1/2/4)",
             "allgather": "ringX all-gather (ringx3)", "heads": "Ulysses heads", "tp": "TP (Megatron)"}
    one = df.sort_values("ranks").drop_duplicates(["algorithm", "ranks", "cache_tokens"])
    for j, s in enumerate(tokens):
        d = one[one["cache_tokens"] == s]
        ax = axes[0][j]
        for key, g in d.groupby(d["schedule"].where(d["schedule"] != "heads", d["algorithm"])):
            g = g.drop_duplicates("ranks")
            ax.plot(g["ranks"], g["tpot_s"] * 1e3, marker="o", ms=3, label=label.get(key, key))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{s / 2**20:g}M-token cache" if s >= 2**20 else f"{s // 1024}K-token cache")
        ax.set_ylabel("predicted TPOT (ms)")
        ax.grid(alpha=0.3, which="both")
        # where ringX's best decode beats the ring schedule and TP
        ax2 = axes[1][j]
        best = d[d["schedule"].isin(["allreduce", "allgather"])].groupby("ranks")["tpot_s"].min()
        for other, style in (("ring", "-"), ("tp", "--")):
            o = d[d["schedule"] == other].groupby("ranks")["tpot_s"].min()
            both = best.index.intersection(o.index)
            if len(both):
                ax2.plot(both, o[both] / best[both], style, marker="o", ms=3, label=f"over {other}")
        ax2.axhline(1.0, color="k", lw=0.8)
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xlabel("GPUs")
        ax2.set_ylabel("ringX decode speedup (TPOT)")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def run(a) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ringx_costmodel.serving import MODELS

    from . import figures, tables

    if a.preset not in MODELS:
        raise UserError(f"unknown preset {a.preset!r}; the serving model knows {', '.join(MODELS)}")
    model = MODELS[a.preset]
    if a.layers is not None:
        if a.layers < 1:
            raise UserError(f"--layers must be a positive integer, got {a.layers}")
        model = type(model)(**{**vars(model), "layers": a.layers})
    ranks, tokens = _ints(a.ranks, "ranks"), _ints(a.tokens, "tokens")
    algorithms = [x for x in a.algorithms.split(",") if x]
    out = Path(a.out) if a.out else Path("runs") / "serving-model"
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name in [x for x in a.machine.split(",") if x]:
            df, cannot = predict_table(name, model, ranks, tokens, algorithms, batch=a.batch, dtype=a.dtype,
                                       prefill_max_ranks=a.prefill_max_ranks, progress=lambda m: print(m, flush=True))
            if df.empty:
                raise UserError(f"nothing can run on {name} at these ranks and tokens")
            m = df["machine"].iloc[0]
            show = df.assign(ttft_s=df["ttft_s"].round(4), tpot_ms=(df["tpot_s"] * 1e3).round(3),
                             merge_ms=(df["decode_merge_s"] * 1e3).round(3),
                             cache_GB=(df["kv_cache_bytes"] / 1e9).round(3))
            cols = ["cache_tokens", "ranks", "algorithm", "schedule", "ulysses_degree", "ttft_s", "tpot_ms", "merge_ms",
                    "cache_GB"]
            print(f"\n{m}: {a.preset} ({model.layers} layers), batch {a.batch}, {a.dtype}; predicted from published "
                  f"figures, not measured; ttft_s NaN: prefill not traced beyond {a.prefill_max_ranks} ranks\n")
            print(tables.render(tables.frame_table(show[cols]), "markdown"))
            if cannot:
                print("\nnot predicted (cannot run there):\n" + "\n".join(f"- {c}" for c in cannot))
            df.to_csv(out / f"serving-{m}.csv", index=False)
            fig = _figure(df, f"{m}: {a.preset} ({model.layers} layers), batch {a.batch}, {a.dtype}: "
                              "predicted from published figures")
            paths = figures.save(fig, out, f"serving-tpot-{m}", ("png",))
            plt.close(fig)
            print(f"\ntable: {out / f'serving-{m}.csv'}; figure: {', '.join(map(str, paths))}")
    except ValueError as e:
        raise UserError(str(e)) from None
    return 0


__all__ = ["add_parser", "predict_table", "run"]
