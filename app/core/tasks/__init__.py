"""Task plug-ins: one module per task, each defining `TASK` (see `base.Task`); this table lists them.

Adding a task is one module and one line here; nothing else branches on a task name.
"""

from __future__ import annotations

import importlib

TASKS: dict[str, str] = {  # task name → module under app.core.tasks
    "text-classification": "classification",
    "question-answering": "qa",
    "token-classification": "ner",
    "feature-extraction": "embeddings",
    "zero-shot-classification": "zero_shot",  # a mode of NLI classifiers (modes_of), no graph of its own
    "text-generation": "generation",
}


def get_task(name: str):
    """The plug-in of a task name (a KeyError for an unknown one: spec.py only produces registered names)."""
    return importlib.import_module(f"app.core.tasks.{TASKS[name]}").TASK


def all_tasks() -> list:
    return [get_task(name) for name in TASKS]


def task_of_architecture(architecture: str) -> str | None:
    """'BertForQuestionAnswering' → 'question-answering', by the longest matching class-name suffix."""
    suffixes = [(s, t.name) for t in all_tasks() for s in (*t.architecture_suffixes, *t.pretraining_suffixes)]
    for suffix, name in sorted(suffixes, key=lambda st: -len(st[0])):
        if architecture.endswith(suffix):
            return name
    return None


def modes_of(task: str, labels=()) -> list[str]:
    """The tasks a model of `task` with these labels can run: its own, then the modes that run on it (a plug-in
    with `runs_on == task` whose `accepts(labels)`; e.g. zero-shot classification on an NLI classifier)."""
    return [task] + [t.name for t in all_tasks() if getattr(t, "runs_on", None) == task and t.accepts(labels)]
