"""The prompts of ThinkPrune's official code: the length system prompt and the user-prompt suffixes."""

from __future__ import annotations

LENGTH_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think></think> and <answer></answer> tags, "
    "respectively, i.e., <think> reasoning process here</think><answer> answer here</answer>. "
    "The output of the assistant should be within {max_length} tokens."
)

USER_PROMPT_SUFFIXES: dict[str, str] = {
    "deepseek": " Let's think step by step and output the final answer within \\boxed{}.",
    "qwq": " Please reason step by step, and put your final answer within \\boxed{}.",
}


def length_system_prompt(max_length: int) -> str:
    """The system prompt that tells the model its token limit."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    return LENGTH_SYSTEM_PROMPT.format(max_length=max_length)


def user_prompt(problem: str, model_family: str = "deepseek") -> str:
    """The problem followed by the answer-format instruction the model family was trained with."""
    try:
        suffix = USER_PROMPT_SUFFIXES[model_family]
    except KeyError:
        raise ValueError(f"unknown model family {model_family!r}; choose from {sorted(USER_PROMPT_SUFFIXES)}") from None
    return problem.strip() + suffix


def thinkprune_messages(problem: str, max_length: int, model_family: str = "deepseek") -> list[dict[str, str]]:
    """Chat messages for one problem: the length system prompt, then the user prompt."""
    return [
        {"role": "system", "content": length_system_prompt(max_length)},
        {"role": "user", "content": user_prompt(problem, model_family)},
    ]
