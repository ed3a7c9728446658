"""Every CPU test runs its ranks on CPU with gloo, also on a machine with GPUs.

Workers and bench drivers launched by the tests inherit this environment, so
``ringx.launch.init()`` picks gloo there instead of NCCL. GPU tests
(``tests/test_gpu.py``) set ``RINGX_DEVICE=cuda`` for their own workers.
"""

import os

os.environ["RINGX_DEVICE"] = "cpu"
