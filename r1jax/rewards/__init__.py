"""Rule-based rewards for R1-style RL (DeepSeek-R1 §2.2.2, §2.3.2).

* :func:`accuracy_reward` / :func:`accuracy_rewards` - math answer vs gold (math_verify, in a
  time-limited worker pool); :func:`extract_answer` - the answer a completion gives.
* :func:`format_reward` - ``<think>..</think><answer>..</answer>`` (R1-Zero) or R1 chat format.
* :func:`language_consistency_reward` - share of CoT words in the target language;
  :func:`register_language` adds languages.
* :func:`code_reward` / :func:`code_rewards` - fraction of tests passed in a sandbox; a sandbox
  that cannot start raises :class:`SandboxError` (a verifier pool that cannot start:
  :class:`VerifierError`), it is never scored.
* :func:`register_reward` / :func:`get_reward` / :data:`REWARDS` - the one registry of rewards a
  config names (r1jax.rewards.registry); :func:`compute_rewards` scores them and
  :func:`combine_rewards` gives the weighted sum.
"""
from r1jax.rewards.accuracy import accuracy_reward, accuracy_rewards
from r1jax.rewards.code import code_reward, code_rewards
from r1jax.rewards.combine import combine_rewards
from r1jax.rewards.extract import extract_answer, extract_code
from r1jax.rewards.format import format_reward
from r1jax.rewards.language import language_consistency_reward, register_language
from r1jax.rewards.pool import VerifierError
from r1jax.rewards.registry import REWARDS, compute_rewards, get_reward, register_reward
from r1jax.rewards.sandbox import SandboxError, run_sandboxed, sandbox_capabilities

__all__ = [
    "accuracy_reward",
    "accuracy_rewards",
    "format_reward",
    "language_consistency_reward",
    "register_language",
    "code_reward",
    "code_rewards",
    "combine_rewards",
    "REWARDS",
    "register_reward",
    "get_reward",
    "compute_rewards",
    "extract_answer",
    "extract_code",
    "run_sandboxed",
    "sandbox_capabilities",
    "SandboxError",
    "VerifierError",
]
