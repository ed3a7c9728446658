"""The field's context-parallel implementations as plugins of the harness's contract (ringx_suite/plugins.py),
registered as entry points of ``ringx.algorithms`` in pyproject.toml. Each adapter calls the installed package
(never a copy of its code) and says, through ``unavailable``, why it cannot run where it cannot."""
