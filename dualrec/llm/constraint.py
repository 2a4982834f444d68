"""Grounded answers: a model may write only whole lines chosen from a fixed set, each choice at most once.

An `AnswerConstraint` says what an engine needs to ground an answer of K lines `<head><choice><suffix>`: the heads
("1.", "\\n2.", ...) and suffixes (a movie's genres) are written by us, never by the model; the model picks each
choice (" Toy Story (1995)") among those still allowed. A line removes its choice from the next ones, so K lines
are K distinct choices. The choices are merged on their shared prefixes in a `PrefixTree` built once per choice set
(it does not depend on what a request excludes); engines read it as GBNF text (llama.cpp and servers, one line at a
time) or as a tree over their tokenizer's tokens (transformers). Nothing here knows about movies:
dualrec.grounding.grounded builds the constraint from the catalogue and a history.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dualrec.llm.errors import LLMError

LINE_START = "{rank}."  # written before each choice; lines after the first start on a new line


class GroundingError(LLMError):
    """A grounded answer cannot be written: nothing is left to choose, or the engine rejected the constraint."""


class GroundingUnsupportedError(GroundingError):
    """The engine or server cannot, or did not, constrain its answer: what it writes would not be grounded."""


@dataclass(frozen=True)
class Choice:
    """One answer line's free part and what follows it."""

    text: str  # what the model writes, its leading space included: " Toy Story (1995)"
    suffix: str = ""  # written by us right after it: " Genres: Animation, Children's, Comedy"


class PrefixTree:
    """Sequences (strings, or token-id tuples) merged on their shared prefixes: a radix tree over them, sorted.

    Node 0 is the root. Each node has a `label` (the symbols on the edge into it), `children` (first symbol of the
    child's label -> child), `end` (the sequence that ends at it, or -1) and, because the sequences are sorted, the
    sequences below it as the contiguous range `lo:hi` of `order` (sorted position -> sequence index).
    """

    def __init__(self, sequences: Sequence[Sequence]) -> None:
        if not sequences:
            raise GroundingError("a prefix tree needs at least one sequence")
        self.sequences = sequences
        self.order = sorted(range(len(sequences)), key=lambda index: sequences[index])
        self.labels: list[Sequence] = []
        self.children: list[dict] = []
        self.end: list[int] = []
        self.lo: list[int] = []
        self.hi: list[int] = []
        self._add(0, len(sequences), 0)

    def _add(self, lo: int, hi: int, depth: int) -> int:
        """Add the node of sorted sequences lo:hi, which share their first `depth` symbols; return its id."""
        first, last = self.sequences[self.order[lo]], self.sequences[self.order[hi - 1]]
        if first == last and lo + 1 < hi:
            raise GroundingError(f"the same choice is listed twice: {first!r}")
        stop = depth
        while stop < min(len(first), len(last)) and first[stop] == last[stop]:
            stop += 1
        node = len(self.labels)
        self.labels.append(first[depth:stop])
        self.children.append({})
        self.end.append(-1)
        self.lo.append(lo)
        self.hi.append(hi)
        start = lo
        if len(first) == stop:  # sorted: the sequence that is the shared prefix itself comes first
            self.end[node] = self.order[lo]
            start += 1
        while start < hi:
            symbol, after = self.sequences[self.order[start]][stop], start + 1
            while after < hi and self.sequences[self.order[after]][stop] == symbol:
                after += 1
            self.children[node][symbol] = self._add(start, after, stop)
            start = after
        return node

    def __len__(self) -> int:
        return len(self.labels)

    def alive(self, excluded: Collection[int]) -> Callable[[int], bool]:
        """A test of whether a node still leads to a sequence outside `excluded` (sequence indices)."""
        mask = np.zeros(len(self.sequences), dtype=np.int32)
        mask[list(excluded)] = 1
        counts = np.concatenate([[0], np.cumsum(mask[self.order])]).tolist()
        return lambda node: self.hi[node] - self.lo[node] > counts[self.hi[node]] - counts[self.lo[node]]

    def gbnf(self, excluded: Collection[int] = ()) -> str:
        """A GBNF grammar (llama.cpp's format, also vLLM's through xgrammar) whose `root` matches exactly the
        string sequences outside `excluded`, built on the tree so shared prefixes are written once."""
        alive = self.alive(excluded)
        if not alive(0):
            raise GroundingError("every choice is excluded: nothing is left to write")
        return f"root ::= {self._expression(0, alive, set(excluded))}\n"

    def _expression(self, node: int, alive: Callable[[int], bool], excluded: set[int]) -> str:
        parts = [gbnf_literal(self.labels[node])] if self.labels[node] else []
        branches = [self._expression(child, alive, excluded) for child in self.children[node].values() if alive(child)]
        ends_here = self.end[node] >= 0 and self.end[node] not in excluded
        if len(branches) == 1 and not ends_here:
            parts.append(branches[0])
        elif branches:
            parts.append(f"({' | '.join(branches)}){'?' if ends_here else ''}")
        return " ".join(parts) or '""'


def gbnf_literal(text: str) -> str:
    """A GBNF string literal (UTF-8 kept as it is; quotes, backslashes and control characters escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


class ChoiceSet:
    """The choices an answer can draw from and their prefix tree: built once, shared by every request."""

    def __init__(self, choices: Sequence[Choice]) -> None:
        self.choices = tuple(choices)
        self.tree = PrefixTree([choice.text for choice in self.choices])
        self.index = {choice.text.strip(): position for position, choice in enumerate(self.choices)}
        if len(self.index) < len(self.choices):
            raise GroundingError("two choices differ only in their outer spaces")

    def __len__(self) -> int:
        return len(self.choices)


@dataclass(frozen=True, eq=False)
class AnswerConstraint:
    """A request for a grounded answer: `lines` lines from `choices`, none of `excluded` (choice positions)."""

    choices: ChoiceSet
    k: int
    excluded: frozenset[int] = frozenset()
    line_start: str = LINE_START

    def __post_init__(self) -> None:
        if self.k < 1:
            raise GroundingError(f"a grounded answer needs at least one line, not {self.k}")
        if self.available == 0:
            raise GroundingError("every choice is excluded: a grounded answer has nothing left to write")

    @property
    def available(self) -> int:
        return len(self.choices) - len(self.excluded)

    @property
    def lines(self) -> int:
        """K, or fewer when fewer choices are left."""
        return min(self.k, self.available)

    def head(self, rank: int) -> str:
        """What precedes line `rank`'s choice: its number, after a line break from the second line on."""
        return ("\n" if rank > 1 else "") + self.line_start.format(rank=rank)

    def allowed(self, text: str, used: Collection[int]) -> int | None:
        """The position of the choice `text` (compared without outer spaces) when it may be written now, else None."""
        position = self.choices.index.get(text.strip())
        return None if position is None or position in self.excluded or position in used else position

    def gbnf(self, used: Collection[int] = ()) -> str:
        """The grammar of one line's choice among those neither excluded nor `used`."""
        return self.choices.tree.gbnf(self.excluded | set(used))

    def longest_choice_bytes(self) -> int:
        return max(len(choice.text.encode()) for choice in self.choices.choices)

    def token_budget(self) -> int:
        """An upper bound on the tokens of the whole answer (the end included): no token is shorter than a byte."""
        longest = max(len((choice.text + choice.suffix).encode()) for choice in self.choices.choices)
        return self.lines * (longest + len(self.head(self.lines).encode())) + 1


def write_lines(
    constraint: AnswerConstraint, decode_line: Callable[[str, frozenset[int]], Iterator[str]], stop: threading.Event
) -> Iterator[str]:
    """A grounded answer from an engine that decodes one choice at a time; yields its chunks until done or `stop`.

    `decode_line(answer_so_far, used)` yields the chunks of one choice among those not excluded nor `used`, continuing
    the answer so far (which ends with the line's head). Whatever it writes must be such a choice, or GroundingError.
    A line's head is yielded with its first chunk, so an engine that fails on its first line has yielded nothing.
    """
    used: set[int] = set()
    answer = ""
    for rank in range(1, constraint.lines + 1):
        head = constraint.head(rank)
        answer += head
        written, pending = "", head  # the head goes out with the line's first chunk, once something is decoded
        for chunk in decode_line(answer, frozenset(used)):
            yield pending + chunk
            written, pending = written + chunk, ""
        if stop.is_set():
            return
        position = constraint.allowed(written, used)
        if position is None:
            raise GroundingError(f"line {rank} is {written.strip()!r}, which is not an allowed choice")
        used.add(position)
        suffix = constraint.choices.choices[position].suffix
        answer += written + suffix
        if suffix:
            yield suffix
