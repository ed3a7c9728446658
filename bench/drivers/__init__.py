"""The measuring drivers, each a small file on the skeleton of ``bench/driver.py``: ``attention`` (``bench
run``), ``step`` (``bench model``, a training step), ``kernels`` and ``collectives``."""
