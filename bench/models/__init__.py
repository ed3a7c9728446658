"""The model zoo of ``bench model``'s training step: plain-PyTorch models (no ringx import), one config each.

``transformer``: the Llama-3-shaped decoder and the ViT encoder (their presets, blocks, batches and FLOP
count). Drivers import the zoo as ``from bench import models``.
"""

from bench.models.transformer import (
    ARCHS,
    FIELDS,
    IGNORE,
    PRESETS,
    Model,
    ModelConfig,
    apply_rope,
    build,
    count_params,
    flops_params,
    global_batch,
    plain_attention,
    preset,
    rope_tables,
    shift_labels,
)

__all__ = ["ARCHS", "FIELDS", "IGNORE", "PRESETS", "Model", "ModelConfig", "apply_rope", "build", "count_params",
           "flops_params", "global_batch", "plain_attention", "preset", "rope_tables", "shift_labels"]
