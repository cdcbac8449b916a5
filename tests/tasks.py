"""Reading trio's task tree: which tasks are still alive."""

from __future__ import annotations

import trio


def live_task_names() -> list[str]:
    """Names of every task in the current trio run."""
    names: list[str] = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        names.append(task.name)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return names


def serving_tasks() -> int:
    """How many request-serving tasks (one per run in progress) are alive."""
    return sum(1 for name in live_task_names() if name.startswith("troupe request to "))
