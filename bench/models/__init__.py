"""The model zoo: plain-PyTorch models (no ringx import), one config each, and their serving path.

- ``transformer``: the Llama-3-shaped decoder and the ViT encoder (their presets, blocks, batches and FLOP
  count); ``bench model`` trains them. Drivers import the zoo as ``from bench import models``.
- ``serving``: inference on the decoder (context-parallel prefill and decode over ``ringx.decode``, the ``tp``
  baseline, the unsharded reference, the serving metrics; docs/serving.md). It is the one module here that
  imports ringx; import it as ``from bench.models import serving`` (the zoo does not import it).
"""

from ringx_drivers.models.transformer import (
    ARCHS,
    FIELDS,
    IGNORE,
    PRESETS,
    Attention,
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

__all__ = ["ARCHS", "Attention", "FIELDS", "IGNORE", "PRESETS", "Model", "ModelConfig", "apply_rope", "build",
           "count_params", "flops_params", "global_batch", "plain_attention", "preset", "rope_tables", "shift_labels"]
