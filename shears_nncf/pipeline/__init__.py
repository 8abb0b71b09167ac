"""`shears run`: every stage in order, each into its own sub-folder, skipping what is already done.

`planning` resolves the steps and runs them, `summary` reads back what they made as `RunSummary` (summary.json), and
`render` writes it as summary.md.
"""

from .planning import EVALUATE_ON, STEPS, pipeline_settings, plan, run_command, run_pipeline
from .summary import RunSummary, _try_command

__all__ = ["EVALUATE_ON", "RunSummary", "STEPS", "_try_command", "pipeline_settings", "plan", "run_command",
           "run_pipeline"]
