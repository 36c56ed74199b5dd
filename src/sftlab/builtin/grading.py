"""Grading a response to a built-in example, whichever suite made it: the one dispatch on meta.

The two task suites share family names (reverse_word, add, ...) but not templates or checkers, so the
suite is read from the example's meta: "suite": "flan" (sftlab.builtin.flan.mixture), else the older
24-family suite (sftlab.builtin.tasks, whose conversations carry no "suite")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sftlab.conversation import Conversation


def _meta(conversation_or_meta: Conversation | Mapping[str, Any]) -> Mapping[str, Any]:
    return conversation_or_meta.meta if isinstance(conversation_or_meta, Conversation) else conversation_or_meta


def gradable(conversation_or_meta: Conversation | Mapping[str, Any]) -> bool:
    """Whether a built-in checker grades this example (its meta names a known family of its suite and the answer)."""
    meta = _meta(conversation_or_meta)
    if "answer" not in meta:
        return False
    if meta.get("suite") == "flan":
        from sftlab.builtin import flan

        return meta.get("family") in flan.FAMILIES
    from sftlab.builtin.tasks import FAMILIES

    return meta.get("family") in FAMILIES


def check_answer(conversation_or_meta: Conversation | Mapping[str, Any], response: str) -> bool:
    """True when `response` gives the example's gold answer, by its suite's checker."""
    meta = _meta(conversation_or_meta)
    if meta.get("suite") == "flan":
        from sftlab.builtin.flan.mixture import check_answer as check
    else:
        from sftlab.builtin.tasks import check_answer as check
    return bool(check(meta, response))
