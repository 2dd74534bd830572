"""Load generation: `attnserve bench` and the benchmark suite's measuring parts.

`load` drives a target in a closed loop (fixed concurrency) or an open loop (fixed rate);
`targets` sends one prepared prediction over gRPC or HTTP; `stats` summarises what came back;
`report` prints, saves and plots it; `run` sweeps a target over several loads.
"""

from .load import Bound, closed_loop, open_loop
from .report import plot_png, table, to_json
from .run import LoadPlan, make_target, sweep
from .stats import OK, Recorder, Summary, percentile
from .targets import GrpcTarget, HttpTarget, Target

__all__ = [
    "OK",
    "Bound",
    "GrpcTarget",
    "HttpTarget",
    "LoadPlan",
    "Recorder",
    "Summary",
    "Target",
    "closed_loop",
    "make_target",
    "open_loop",
    "percentile",
    "plot_png",
    "sweep",
    "table",
    "to_json",
]
