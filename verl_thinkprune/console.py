"""What the iterative driver shows a person: one line per event, a live progress bar per round, errors from logs.

verl's own output (its config, every worker's warnings) goes to each step's log file; ``--verbose`` streams it too.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from verl_thinkprune.rounds import Round

POLL_S = 2.0
ERROR_LINE = re.compile(r"Traceback \(most recent call last\)|\b\w*(Error|Exception)\b|error:", re.IGNORECASE)


class Console:
    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    def say(self, message: str) -> None:
        print(f"[thinkprune] {message}", flush=True)

    def stream(self, line: bytes) -> None:
        """A line of a launched step's output: shown only with --verbose (it is in the step's log either way)."""
        if self.verbose:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()

    @contextmanager
    def round_progress(self, rnd: Round, total_rounds: int) -> Iterator[None]:
        """A progress bar for the round's training, updated from the files the round writes."""
        if self.verbose:  # verl's own progress bar is in the stream already
            yield
            return
        bar = tqdm(
            desc=f"round {rnd.index}/{total_rounds} (L={rnd.limit})",
            unit="step",
            dynamic_ncols=True,
            mininterval=POLL_S if sys.stderr.isatty() else 30.0,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        )
        stop = threading.Event()
        poller = threading.Thread(target=_follow, args=(rnd, bar, stop), daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join()
            _update(rnd, bar)
            bar.close()

    def failure(self, log: Path, lines: int = 15) -> None:
        """The end of a failed step's log, from its last error on, so the cause shows without opening the file."""
        print(f"[thinkprune] the last lines of {log} that show the error:", file=sys.stderr)
        print(error_excerpt(log, lines), file=sys.stderr, flush=True)


def error_excerpt(log: Path, lines: int = 15) -> str:
    """The last traceback or error line of a log and what follows it (at most `lines` lines), else its tail."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"    ({log} cannot be read)"
    starts = [i for i, line in enumerate(text) if ERROR_LINE.search(line)]
    first = starts[-1] if starts else max(0, len(text) - lines)
    tracebacks = [i for i in starts if "Traceback" in text[i]]
    if tracebacks and len(text) - tracebacks[-1] <= 4 * lines:
        first = tracebacks[-1]
    excerpt = text[first:][-lines:]
    return "\n".join(f"    {line}" for line in excerpt)


def _follow(rnd: Round, bar: tqdm, stop: threading.Event) -> None:
    while not stop.wait(POLL_S):
        _update(rnd, bar)


def _update(rnd: Round, bar: tqdm) -> None:
    progress = rnd.progress()
    if progress.total_steps is not None and bar.total != progress.total_steps:
        bar.reset(total=progress.total_steps)
        bar.initial = bar.n = progress.completed_step  # a resumed round: its rate counts only the steps of this run
    if progress.completed_step > bar.n:
        bar.update(progress.completed_step - bar.n)
    if (validation := progress.newest_validation) is not None:
        measured = validation.unlimited or validation.under_limit
        bar.set_postfix_str(
            f"val step {validation.step}: pass@1 {measured.pass_at_1:.3f}, len {measured.mean_length:.1f}, "
            f"trunc {measured.truncation_rate:.2f}",
            refresh=False,
        )
