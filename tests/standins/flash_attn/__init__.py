"""A CPU stand-in for flash-attn (tests/standins/README.md): not flash-attn, and never installed."""

__version__ = "2.8.3"  # the interface it answers is 2.8.3's
STANDIN = True


def flash_attn_func(*args, **kwargs):
    """Importable, as packages that probe flash-attn import it; not answered by the stand-in."""
    raise NotImplementedError("the flash-attn stand-in answers only flash_attn_interface's block functions")
