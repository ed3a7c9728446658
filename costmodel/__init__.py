"""``ringx_costmodel`` (this folder, costmodel/, installed and imported under that name).

The cost model: predicted time of every algorithm at any scale, from its traced schedule.

- ``network``: latency steps and bus-bandwidth factors per operation (nccl-tests' conventions);
- ``machine``: a machine description (throughput, links), published in a profile or fitted;
- ``simulate``: replay each rank's traced events on a machine;
- ``predict``: one call's predicted time, and speedup curves over rank counts;
- ``serving``: time to first token and per output token of every decode schedule and of TP.

It depends on ``ringx`` only; ``bench`` (job time limits) and ``analysis`` (calibration, figures) use it.
"""

from .machine import Machine, from_table
from .network import Link, busbw_factor, hops
from .predict import predict, speedup_curve
from .serving import predict_serving
from .simulate import Prediction, simulate

__all__ = ["Link", "Machine", "Prediction", "busbw_factor", "from_table", "hops", "predict", "predict_serving",
           "simulate", "speedup_curve"]
