"""doit entry point: the task graph lives in pipeline.wiring; this file only names its tasks.

Run `doit` to promote, `doit list` to see every task, `doit help <task>` for one. Importing it does
nothing: the run lock, journal merge and promotion stamp belong to the run entry (pipeline.wiring.entry,
doit's `run` command as configured in pyproject.toml).
"""

from pipeline.wiring.ci_tasks import task_check, task_hooks, task_plan, task_verify  # noqa: F401  (CI stages)
from pipeline.wiring.graph_task import task_graph  # noqa: F401  (`doit graph`: a picture of the task graph)
from pipeline.wiring.import_task import task_import  # noqa: F401  (`doit import`: adopt an existing cluster)
from pipeline.wiring.key_tasks import task_drill, task_keygen, task_rekey, task_rotate  # noqa: F401  (key lifecycle)
from pipeline.wiring.secrets_task import task_secrets  # noqa: F401  (your own secret variables)
from pipeline.wiring.tasks import (  # noqa: F401  (doit collects task_* names from this module)
    DOIT_CONFIG,
    task_bootstrap,
    task_encrypt,
    task_preflight,
    task_promote,
    task_render,
    task_stage,
)
