"""transformers models under ringx (tests/test_hf.py and its worker): the cases, shared by pytest and the ranks.

Every architecture of ``bench model --hf`` (tiny configs from transformers' own config classes, random weights) x
the six algorithms the issue names (at 4 ranks each on one of the architectures), each on a plain or a packed batch
(documents drawn from the run's seed; which algorithm gets which turns with the seed, and every architecture runs
both), one float64 training step each: the loss, every parameter's gradient and each rank's logits against the
unsharded model. RINGX_TEST_FULL=1 runs every algorithm of the registry on both batches at every world (~8x longer).
"""

from __future__ import annotations

import os
import random

ARCHS = ("llama", "qwen3", "mistral", "gpt-oss")
ALGORITHMS = ("ring", "zigzag", "ringx3", "ringx4o", "ulysses", "usp")
SEQ = 48  # divisible for every layout at 1, 2 and 4 ranks
BATCH = 2
TOL = 1e-9
RANKS_PER_NODE = {4: 2}  # 4 ranks as 2 nodes: usp runs Ulysses within a node and a ring across the two


def algorithms() -> tuple[str, ...]:
    if os.environ.get("RINGX_TEST_FULL") == "1":
        import ringx

        return tuple(ringx.ALGORITHMS)
    return ALGORITHMS


def cases(world: int, seed: int) -> list[tuple[str, str, bool]]:
    """(architecture, algorithm, packed) of one launch. By default 4 ranks (two simulated nodes, the slow launch on
    2 cores) run each algorithm on one architecture, each architecture at least once, which turning with the seed."""
    full = os.environ.get("RINGX_TEST_FULL") == "1"
    out = []
    for a, arch in enumerate(ARCHS):
        kept = [x for i, x in enumerate(algorithms()) if full or world < 4 or (i + seed) % len(ARCHS) == a
                or (i >= len(ARCHS) and (i + seed + 1) % len(ARCHS) == a)]
        for k, algo in enumerate(kept):  # plain and packed alternate within an architecture
            out += [(arch, algo, p) for p in (False, True) if full or p == bool((k + a + seed) % 2)]
    return out


def documents(seed: int, seq: int = SEQ) -> tuple[int, ...]:
    """2-5 packed documents drawn from ``seed`` (some shorter than the windows of 6, some longer)."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, seq), rng.randint(1, 4)))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, seq]))


def case_id(world: int, arch: str, algorithm: str, packed: bool) -> str:
    return f"P{world}-{arch}-{algorithm}-{'packed' if packed else 'plain'}"
