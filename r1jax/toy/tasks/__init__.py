"""Synthetic reasoning tasks. `TASKS` maps a task name to its generator (a `Task`)."""
from r1jax.toy.tasks.arithmetic import (
    LANGUAGES,
    TASKS,
    AddTask,
    Mul1Task,
    Task,
    answer_text,
    get_language,
    get_task,
    make_problems,
    parse_answer_text,
    split_of,
    words_of_language,
)

__all__ = [
    "TASKS", "LANGUAGES", "Task", "AddTask", "Mul1Task", "get_task", "get_language", "make_problems",
    "answer_text", "parse_answer_text", "split_of", "words_of_language",
]
