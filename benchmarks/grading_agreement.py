"""Grading agreement on Math-Verify's own labelled cases: ThinkPrune's reward path beside verl's scorers.

Reads the labelled (gold, pred, expected) cases of a Math-Verify checkout's tests at run time (nothing of them is
copied here), writes each as a finished response and scores it through verl's RewardLoopWorker with the ThinkPrune
manager, and with verl's default scorer (per data source) and verl's math-verify scorer. Prints each grader's
agreement with the labels. Run: `python benchmarks/grading_agreement.py /path/to/Math-Verify`
(`git clone https://github.com/huggingface/Math-Verify`).

A case becomes a finished response as a model prompted to box its answer writes it:
- a prediction holding a ``\\boxed{}`` is the response as it is;
- a prediction that is one LaTeX expression (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``) becomes
  "The final answer is $\\boxed{...}$.";
- free text with neither (Math-Verify's extraction of numbers from prose) is outside a boxed-answer grader's job
  and is left out, as are cases labelled under non-default verify settings and non-literal ones; the counts are
  printed.
The gold answer, stripped of one pair of math delimiters, is the ground truth every grader gets.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from grading_agreement import THINKPRUNE, Case, agreement, all_scores, thinkprune_scores  # noqa: E402

DEFAULT_SETTINGS = {"precision": 6, "strict": True, "allow_set_relation_comp": False}
"""math-verify's verify() defaults: cases labelled under other settings are left out."""
MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def strip_math_delimiters(text: str) -> str | None:
    """The expression inside one pair of math delimiters wrapping all of text; None if text is not one such."""
    text = text.strip()
    for opening, closing in MATH_DELIMITERS:
        inner = text[len(opening) : -len(closing)]
        if text.startswith(opening) and text.endswith(closing) and inner.strip() and "$" not in inner:
            return inner.strip()
    return None


def as_response(pred: str) -> str | None:
    if "\\boxed" in pred:
        return pred
    expression = strip_math_delimiters(pred)
    return None if expression is None else f"The final answer is $\\boxed{{{expression}}}$."


def settings_of(function: ast.FunctionDef) -> dict[str, object]:
    """Literal verify settings the test body passes (e.g. compare_strings(..., precision=5))."""
    return {
        keyword.arg: keyword.value.value
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg in DEFAULT_SETTINGS and isinstance(keyword.value, ast.Constant)
    }


def labelled_cases(math_verify_dir: Path) -> tuple[list[Case], Counter]:
    """Every parametrized (gold, pred, expected|result, ...) case of the checkout's tests, and why others left."""
    cases, left_out = [], Counter()
    for path in sorted((math_verify_dir / "tests").glob("test_*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef):
                continue
            for decorator in function.decorator_list:
                if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.parametrize"):
                    continue
                names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")]
                if names[:2] != ["gold", "pred"] or names[2] not in ("expected", "result"):
                    continue
                for index, element in enumerate(decorator.args[1].elts):
                    name = f"{path.stem}::{function.name}[{index}]"
                    try:
                        values = dict(zip(names, ast.literal_eval(element), strict=True))
                    except ValueError:
                        left_out["not a literal"] += 1
                        continue
                    settings = settings_of(function) | {k: values[k] for k in DEFAULT_SETTINGS if k in values}
                    response = as_response(values["pred"])
                    if any(DEFAULT_SETTINGS[key] != value for key, value in settings.items()):
                        left_out["non-default verify settings"] += 1
                    elif response is None:
                        left_out["free text without a box or LaTeX answer"] += 1
                    else:
                        truth = strip_math_delimiters(values["gold"]) or values["gold"].strip()
                        cases.append(Case(name, truth, response, bool(values[names[2]])))
    return cases, left_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("math_verify_dir", type=Path, help="a checkout of github.com/huggingface/Math-Verify")
    parser.add_argument("--show-disagreements", action="store_true", help="list the cases ThinkPrune grades wrong")
    args = parser.parse_args()
    if not (args.math_verify_dir / "tests").is_dir():
        sys.exit(f"{args.math_verify_dir} has no tests/ folder: pass a Math-Verify checkout")

    cases, left_out = labelled_cases(args.math_verify_dir)
    print(f"{len(cases)} labelled cases ({sum(c.right for c in cases)} right), left out: {dict(left_out)}")
    scores = all_scores(cases)
    for grader, grader_scores in scores.items():
        print(f"{grader:<40}: {agreement(cases, grader_scores):6.1%}")
    last_box = thinkprune_scores(cases, "reward.reward_kwargs.answer_boxes=last")
    print(f"{'thinkprune, answer_boxes=last':<40}: {agreement(cases, last_box):6.1%}")
    if args.show_disagreements:
        for case, score in zip(cases, scores[THINKPRUNE], strict=True):
            if (score > 0) != case.right:
                print(f"- {case.name} label={int(case.right)}: truth {case.ground_truth[:80]!r}")
                print(f"  response ...{case.response[-160:]!r}")


if __name__ == "__main__":
    main()
