"""Reasoning-behaviour breakdown by an LLM judge behind any OpenAI-compatible endpoint (a vLLM server, for example).

As in the paper, the judge splits one finished reasoning per problem into phases (steps are separated by blank lines)
and names each with one of ten behaviours; a behaviour's share is the share of steps that its phases cover.

Requests go through the maintained openai client (timeouts, retries, Retry-After, any compatible server), an optional
extra (``pip install 'verl-thinkprune[judge]'``) because nothing else in the project needs it.
"""

from __future__ import annotations

import difflib
import re
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from verl_thinkprune.analysis import one_line
from verl_thinkprune.analysis.perplexity import reasoning_part
from verl_thinkprune.budget_forcing import THINK_END
from verl_thinkprune.presentation import markdown_table

BEHAVIOURS = (
    "Understanding the Problem",
    "Reformulating the Problem",
    "Applying Known Theorems/Properties",
    "Breaking Down into Subproblems",
    "Computing or Simplifying Expressions",
    "Substituting Known Values or Results",
    "Reassess and Verify Local Steps",
    "Reassess the Whole Solution",
    "Exploring Alternative Approaches",
    "Finalize and Present the Answer",
)
"""The paper's ten problem-solving phases."""
OTHER = "Other"

JUDGE_PROMPT = """You will read a math problem and a step-by-step solution whose steps are separated by blank lines.
Group consecutive steps into high-level problem-solving phases. Every step belongs to exactly one phase; a kind of
phase may occur several times, in any order. Name each phase with one of these behaviours:

{behaviours}

Answer with the phases only, in order, each as three lines:
[Phase k]: <behaviour name>
[Start]: <the text of the phase's first step>
[End]: <the text of the phase's last step>

Problem:
{problem}

Solution:
{solution}"""

NO_API_KEY = "EMPTY"
"""Sent when no key is set: the openai client needs one, and servers started without a key (vLLM) ignore it."""
CONNECT_TIMEOUT_S = 10.0
"""Seconds to open a connection: a wrong address fails in seconds, however long a reply may take to generate."""
UNREACHABLE = "not sent: the endpoint was unreachable"


class JudgeClient:
    """A judge model behind an OpenAI-compatible endpoint, through the openai client (its timeouts, its bounded
    retries with backoff on connection errors, 408, 409, 429 and 5xx, honouring Retry-After)."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None, timeout: float, retries: int, max_tokens: int = 4096
    ):
        self.model = model
        self.max_tokens = max_tokens
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or NO_API_KEY,  # never $OPENAI_API_KEY implicitly: it is not for a third-party endpoint
            timeout=openai.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            max_retries=retries,
        )

    def complete(self, prompt: str) -> str:
        """The reply to one user message at temperature 0; raises openai.OpenAIError after the last retry fails, and
        ValueError for a reply without a message."""
        completion = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            max_tokens=self.max_tokens,
        )
        message = completion.choices[0].message if completion.choices else None
        if message is None or message.content is None:
            raise ValueError(f"a reply without a message: {completion}")
        return message.content


def judge_prompt(problem: str, reasoning: str) -> str:
    behaviours = "\n".join(f"{i}. {name}" for i, name in enumerate(BEHAVIOURS, 1))
    return JUDGE_PROMPT.format(behaviours=behaviours, problem=problem.strip(), solution=reasoning.strip())


def canonical_behaviour(name: str) -> str:
    """The listed behaviour a judge's phase name means (case, numbering and markup ignored), else OTHER."""
    key = re.sub(r"[^a-z]", "", name.lower())
    return next((b for b in BEHAVIOURS if re.sub(r"[^a-z]", "", b.lower()) == key), OTHER)


def parse_phases(reply: str) -> list[tuple[str, str, str]]:
    """(behaviour, first step, last step) for each complete phase block of a judge's reply."""
    phases, current = [], {}
    for line in reply.splitlines():
        match = re.match(r"\s*\[(Phase[^\]]*|Start|End)\]\s*:\s*(.*)", line)
        if not match:
            continue
        field = "phase" if match.group(1).startswith("Phase") else match.group(1).lower()
        current[field] = match.group(2).strip()
        if field == "end" and {"phase", "start"} <= current.keys():
            phases.append((canonical_behaviour(current["phase"].strip("* ")), current["start"], current["end"]))
            current = {}
    return phases


def step_index(quote: str, steps: list[str]) -> int:
    """The step a judge quoted: the first that contains it (or that it contains), else the most similar."""
    for index, step in enumerate(steps):
        if quote in step or step in quote:
            return index
    return max(range(len(steps)), key=lambda i: difflib.SequenceMatcher(None, quote, steps[i]).ratio())


def behaviour_steps(reply: str, reasoning: str) -> Counter:
    """Steps covered per behaviour; phases whose end comes before their start are dropped."""
    steps = [s.strip() for s in reasoning.split("\n\n") if s.strip()] or [reasoning]
    counts: Counter = Counter()
    for behaviour, start, end in parse_phases(reply):
        first, last = step_index(start, steps), step_index(end, steps)
        if last >= first:
            counts[behaviour] += last - first + 1
    return counts


def judged_reasoning(records: Iterable[dict[str, Any]], max_problems: int | None = None) -> list[tuple[str, str]]:
    """(problem, reasoning) for the first finished reasoning of each problem, as the official analysis picks."""
    picked = []
    for record in records:
        finished = [r for r in record["responses"] if THINK_END in r]
        if finished:
            picked.append((record["prompt"][-1]["content"], reasoning_part(finished[0])))
        if max_problems is not None and len(picked) >= max_problems:
            break
    return picked


def behaviour_breakdown(
    client: JudgeClient, records: Iterable[dict[str, Any]], max_problems: int | None, concurrency: int
) -> dict[str, Any]:
    """Steps per behaviour and their fractions over one run. A request that fails after the client's retries counts
    as failed; once the endpoint proved unreachable before answering anything, the rest are not sent (a wrong base
    URL fails in seconds, not once per problem)."""
    items = judged_reasoning(records, max_problems)
    answered, unreachable = threading.Event(), threading.Event()

    def judge(item: tuple[str, str]) -> Counter | str:
        """The steps per behaviour, or why there are none."""
        if unreachable.is_set() and not answered.is_set():
            return UNREACHABLE
        try:
            reply = client.complete(judge_prompt(*item))
        except openai.APIConnectionError as error:  # timeouts included
            unreachable.set()
            return one_line(error) + (f" ({one_line(error.__cause__)})" if error.__cause__ else "")
        except (openai.OpenAIError, ValueError) as error:
            return one_line(error)
        answered.set()
        return behaviour_steps(reply, item[1])

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(judge, items))
    failures = [result for result in results if isinstance(result, str)]
    counts: Counter = Counter()
    for result in results:
        if isinstance(result, Counter):
            counts.update(result)
    total = sum(counts.values())
    return {
        "judged": len(results) - len(failures),
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "steps": {b: counts[b] for b in (*BEHAVIOURS, OTHER) if counts[b]},
        "fractions": {b: counts[b] / total for b in (*BEHAVIOURS, OTHER) if counts[b]},
    }


def behaviour_table(report: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per behaviour, one column per run, the share of its steps."""
    labels = list(report)
    rows = [
        [behaviour, *(f"{100 * report[label]['fractions'].get(behaviour, 0.0):.1f}%" for label in labels)]
        for behaviour in (*BEHAVIOURS, OTHER)
    ]
    return markdown_table(["behaviour (share of steps)", *labels], rows)
