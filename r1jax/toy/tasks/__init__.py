"""Synthetic reasoning tasks. `TASKS` maps a task name to its generator (a `Task`)."""
from r1jax.toy.tasks.arithmetic import (
    LANGUAGES,
    AddTask,
    Mul1Task,
    Task,
    answer_text,
    get_language,
    make_problems,
    parse_answer_text,
    split_of,
    words_of_language,
)

TASKS: dict[str, Task] = {
    "add": AddTask(),
    "mul1": Mul1Task(),
}


def get_task(name: str) -> Task:
    """The registered task `name` (KeyError naming the known tasks)."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None


__all__ = [
    "TASKS", "LANGUAGES", "Task", "AddTask", "Mul1Task", "get_task", "get_language", "make_problems",
    "answer_text", "parse_answer_text", "split_of", "words_of_language",
]
