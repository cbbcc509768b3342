"""Grading agreement on our own labelled corpus: ThinkPrune's reward path against verl's scorers.

Each case is a finished response (thinking, then a final answer), a ground truth as datasets write it, and whether
the response is right as a careful human grader would say: its final answer, boxed as ThinkPrune's prompt asks, is
equivalent to the ground truth. ThinkPrune is scored through verl's reward loop;
verl's default scorer (per data source) and verl's math-verify scorer get the same text. Math-Verify's own labelled
cases are measured by benchmarks/grading_agreement.py.
"""

from __future__ import annotations

import pytest
from grading_agreement import THINKPRUNE, VERL_DEFAULT_SOURCES, VERL_MATH_VERIFY, Case, agreement, all_scores


def think(final: str, thought: str = "Let me work through this carefully. Wait, let me double-check.") -> str:
    return f"<think>\n{thought}\n</think>\n\n{final}"


CORPUS = [
    # An answer in several boxes is one answer: all of them, as a set.
    Case("pairs-two-boxes", "(1,2), (2,1)", think("The solutions are $\\boxed{(1,2)}$ and $\\boxed{(2,1)}$."), True),
    Case("pairs-as-set", "\\{(1,2),(2,1)\\}", think("So $(x,y)$ is \\boxed{(2,1)}, \\boxed{(1,2)}."), True),
    Case("equations-two-boxes", "k = 45, n = 2", think("Hence \\boxed{k=45} and \\boxed{n=2}."), True),
    Case("roots-or", "-2, 1", think("The roots are $x = \\boxed{-2}$ or $x = \\boxed{1}$."), True),
    Case("roots-quad-and", "3, 5", think("\\[ \\boxed{3} \\quad \\text{and} \\quad \\boxed{5} \\]"), True),
    Case("list-three-boxes", "1, 2, 3", think("The values are \\boxed{1}, \\boxed{2}, and \\boxed{3}."), True),
    Case("one-of-two-wrong", "3, 5", think("The answers are \\boxed{3} and \\boxed{7}."), False),
    Case("hedged-boxes", "2", think("It is either \\boxed{2} or \\boxed{3}."), False),
    Case("missing-part", "(1,2), (2,1)", think("The only solution is \\boxed{(1,2)}."), False),
    Case("earlier-sentence-box", "7", think("A first guess was \\boxed{5}. After checking, it is \\boxed{7}."), True),
    Case("restated-answer", "12", think("So the count is \\boxed{12}.\n\n**Final Answer**\n\\boxed{12}"), True),
    Case("corrected-in-summary", "12", think("I said \\boxed{10} before.\nThe correct total is \\boxed{12}."), True),
    # A ground truth written as several boxes.
    Case("truth-two-boxes", "\\boxed{2} and \\boxed{3}", think("The primes are \\boxed{2, 3}."), True),
    Case("truth-two-boxes-partial", "\\boxed{2}, \\boxed{3}", think("The answer is \\boxed{3}."), False),
    Case("truth-boxed-number", "\\boxed{033}", think("The remainder is \\boxed{33}."), True),
    # Boxes inside the thinking do not count.
    Case("thinking-box-right", "7", think("The answer is \\boxed{8}.", "Maybe \\boxed{7}? No, let me recount."), False),
    Case("thinking-box-wrong", "8", think("The answer is \\boxed{8}.", "Maybe \\boxed{7}? No, let me recount."), True),
    Case("thinking-many-boxes", "40", think("Therefore \\boxed{40}.", "\\boxed{10}, \\boxed{20}, \\boxed{30}"), True),
    # Sets, tuples, intervals.
    Case("set-order", "\\{1, 2, 3\\}", think("The set is $\\boxed{\\{3, 2, 1\\}}$."), True),
    Case("tuple-order", "(1, 2)", think("The point is $\\boxed{(2, 1)}$."), False),
    Case("half-open-interval", "[0, 1)", think("The range is $\\boxed{[0,1)}$."), True),
    Case("interval-ends", "(0, 1]", think("The range is $\\boxed{[0,1]}$."), False),
    Case("union", "(-\\infty, 2) \\cup (3, \\infty)", think("$x \\in \\boxed{(-\\infty,2)\\cup(3,+\\infty)}$"), True),
    Case("interval-in-box", "[2, 5]", think("Thus $\\boxed{x \\in [2, 5]}$."), True),
    Case(
        "left-right",
        "(3, \\frac{\\pi}{2})",
        think("In polar form: $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$."),
        True,
    ),
    Case(
        "matrix",
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        think("$\\boxed{\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}}$"),
        True,
    ),
    # Equations.
    Case("truth-equation", "x = 3", think("So \\boxed{3}."), True),
    Case("answer-equation", "3", think("We find \\boxed{x=3}."), True),
    Case("line-rearranged", "y = 2x + 1", think("The line is \\boxed{y = 1 + 2x}."), True),
    Case("line-wrong", "y = 2x + 1", think("The line is \\boxed{y = 2x - 1}."), False),
    Case("equation-chain", "11", think("Summing, $\\boxed{n = 5 + 6 = 11}$."), True),
    # Fractions, decimals, radicals, constants.
    Case("fraction-decimal", "\\frac{3}{4}", think("The probability is \\boxed{0.75}."), True),
    Case("decimal-fraction", "0.75", think("The probability is $\\boxed{\\dfrac34}$."), True),
    Case("slash-fraction", "1/3", think("\\boxed{\\tfrac{1}{3}}"), True),
    Case("negative-fraction", "-\\frac{1}{2}", think("The slope is $\\boxed{\\frac{-1}{2}}$."), True),
    Case("rounded-decimal", "\\frac{2}{3}", think("About \\boxed{0.67}."), False),
    Case("radical-simplified", "2\\sqrt{2}", think("The length is $\\boxed{\\sqrt{8}}$."), True),
    Case("radical-fraction", "\\frac{\\sqrt{2}}{2}", think("$\\sin 45^\\circ = \\boxed{\\frac{1}{\\sqrt{2}}}$"), True),
    Case("pi", "2\\pi", think("The period is $\\boxed{2 \\pi}$."), True),
    Case("sign-error", "5", think("So $x = \\boxed{-5}$."), False),
    Case("square-vs-root", "3", think("The side is $\\boxed{\\sqrt{3}}$."), False),
    Case("leading-zeros", "25", think("The answer is \\boxed{025}."), True),
    Case("thousands-brace", "1000", think("There are $\\boxed{1{,}000}$ ways."), True),
    Case("power", "1000", think("That is $\\boxed{10^3}$."), True),
    Case("expression-order", "a^2 + 2ab + b^2", think("Expanding, \\boxed{(a+b)^2}."), True),
    Case("expression-wrong", "x^2", think("The derivative is \\boxed{2x}."), False),
    # Units, degrees, percent, money.
    Case("percent-both", "25\\%", think("The increase is \\boxed{25\\%}."), True),
    Case("percent-bare", "25\\%", think("The increase is \\boxed{25}."), True),
    Case("unit-in-answer", "12", think("The side is $\\boxed{12 \\text{ cm}}$."), True),
    Case("unit-in-truth", "12\\text{ cm}", think("The side is $\\boxed{12}$."), True),
    Case("degrees", "90^\\circ", think("The angle is $\\boxed{90^\\circ}$."), True),
    Case("degrees-bare", "90", think("The angle is $\\boxed{90^{\\circ}}$."), True),
    Case("money", "5.50", think("She pays $\\boxed{\\$5.50}$."), True),
    Case("wrong-with-unit", "12", think("The side is $\\boxed{13 \\text{ cm}}$."), False),
    # Text and multiple choice.
    Case("choice-letter", "B", think("The correct option is $\\boxed{B}$."), True),
    Case("choice-text", "\\text{(C)}", think("Answer: $\\boxed{\\textbf{(C)}}$"), True),
    Case("choice-wrong", "C", think("The correct option is $\\boxed{D}$."), False),
    Case("name", "\\text{Evelyn}", think("$\\boxed{\\text{Evelyn}}$ is fastest."), True),
    # No usable final answer.
    Case("no-box", "42", think("The answer is 42, I think."), False),
    Case("empty-box", "42", think("The answer is \\boxed{}."), False),
    Case("unclosed-box", "42", think("The answer is \\boxed{42"), False),
]


@pytest.fixture(scope="module")
def scores() -> dict[str, list[float]]:
    return all_scores(CORPUS)


def disagreements(grader_scores: list[float]) -> list[str]:
    return [case.name for case, score in zip(CORPUS, grader_scores, strict=True) if (score > 0) != case.right]


def test_corpus_covers_right_and_wrong_answers():
    assert len(CORPUS) >= 50 and 0.25 < sum(case.right for case in CORPUS) / len(CORPUS) < 0.85
    assert len({case.name for case in CORPUS}) == len(CORPUS)


def test_reward_path_agrees_with_the_labels(scores):
    assert agreement(CORPUS, scores[THINKPRUNE]) >= 0.95, disagreements(scores[THINKPRUNE])


@pytest.mark.parametrize("grader", [*VERL_DEFAULT_SOURCES, VERL_MATH_VERIFY])
def test_reward_path_agrees_at_least_as_often_as_verls_scorers(scores, grader):
    ours, theirs = agreement(CORPUS, scores[THINKPRUNE]), agreement(CORPUS, scores[grader])
    assert ours >= theirs, (
        f"{grader}: {theirs:.1%} > ours {ours:.1%}; ours wrong on {disagreements(scores[THINKPRUNE])}"
    )
