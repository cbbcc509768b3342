"""Reasoning-behaviour breakdown by an LLM judge behind any OpenAI-compatible endpoint (a vLLM server, for example).

As in the paper, the judge splits one finished reasoning per problem into phases (steps are separated by blank lines)
and names each with one of ten behaviours; a behaviour's share is the share of steps that its phases cover.
"""

from __future__ import annotations

import difflib
import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from verl_thinkprune.analysis.perplexity import reasoning_part
from verl_thinkprune.budget_forcing import THINK_END

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

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class JudgeClient:
    """Chat completions over HTTP with the standard library: timeouts, bounded retries with backoff."""

    base_url: str
    """e.g. http://127.0.0.1:8000/v1"""
    model: str
    api_key: str | None = None
    timeout: float = 300.0
    retries: int = 3
    backoff: float = 2.0
    max_tokens: int = 4096

    def complete(self, prompt: str) -> str:
        """The reply to one user message at temperature 0; raises after the last retry fails."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.0,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as error:
                if error.code not in RETRYABLE_STATUS or attempt == self.retries:
                    raise
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if attempt == self.retries:
                    raise
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")


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
    client: JudgeClient, records: Iterable[dict[str, Any]], max_problems: int | None = None, concurrency: int = 4
) -> dict[str, Any]:
    """Steps per behaviour and their fractions over one run; requests that fail after retries count as failed."""
    items = judged_reasoning(records, max_problems)

    def judge(item: tuple[str, str]) -> Counter | None:
        try:
            return behaviour_steps(client.complete(judge_prompt(*item)), item[1])
        except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError, ValueError):
            return None

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(judge, items))
    counts: Counter = Counter()
    for result in results:
        counts.update(result or {})
    total = sum(counts.values())
    return {
        "judged": sum(r is not None for r in results),
        "failed": sum(r is None for r in results),
        "steps": {b: counts[b] for b in (*BEHAVIOURS, OTHER) if counts[b]},
        "fractions": {b: counts[b] / total for b in (*BEHAVIOURS, OTHER) if counts[b]},
    }
