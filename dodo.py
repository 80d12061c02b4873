"""doit entry point: the task graph lives in pipeline.tasks; this file only wires it in.

Run `doit` to promote, `doit list` to see every task, `doit help <task>` for one.
"""

from pipeline.graph_task import task_graph  # noqa: F401  (`doit graph`: a picture of the task graph)
from pipeline.tasks import (  # noqa: F401  (doit collects task_* names from this module)
    DOIT_CONFIG,
    task_bootstrap,
    task_check,
    task_encrypt,
    task_promote,
    task_render,
    task_stage,
)
