"""Reasoning models (DeepSeek-R1 and its distils) think inside <think>...</think> before they answer."""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a (possibly still streaming) output into (thinking, answer); parse only the answer.

    An unclosed `<think>` means everything after it is still thinking; a `</think>` without an opening tag
    (chat templates that open it in the prompt) means everything before it was thinking.
    """
    before, opened, rest = text.partition(OPEN)
    if not opened:
        thinking, closed, answer = text.partition(CLOSE)
        return (thinking.strip(), answer.strip()) if closed else ("", text.strip())
    thinking, _, after = rest.partition(CLOSE)
    return thinking.strip(), (before + after).strip()
