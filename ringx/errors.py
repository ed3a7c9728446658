"""The library's one error type for bad input (its own module so that every layer can raise it)."""


class RingxInputError(ValueError):
    """Bad input to :func:`ringx.attention` (or a bad :class:`ringx.Mask`); raised on every rank of the group alike."""
