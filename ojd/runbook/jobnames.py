"""Names of jobs of upstream-spelled ``job`` blocks, made as upstream Odd Jobs makes them.

oj names a pipeline's jobs with its ``name`` template as rendered; a ``job`` block's rendered
name is instead cut to a short slug (lowercase words of letters and digits joined by ``-``,
filler words and the project's name dropped) and given the job's id as a nonce, so that
upstream runbooks list their jobs as they do there. Pure.
"""

from __future__ import annotations

import re
from typing import Any

SLUG_LIMIT = 28
# words that say little in a name; dropped from slugs
FILLER = frozenset((
    "a", "an", "the", "and", "or", "but", "nor", "not", "no", "so", "yet", "of", "in", "on", "at",
    "to", "by", "for", "from", "with", "into", "onto", "as", "than", "is", "are", "was", "were",
    "be", "been", "being", "am", "do", "does", "did", "has", "have", "had", "will", "would",
    "shall", "should", "can", "could", "may", "might", "must", "this", "that", "these", "those",
    "it", "its", "then", "once", "again", "each", "every", "all", "any", "both", "some", "such",
    "only", "own", "same", "very", "just", "too", "over", "under", "out", "off", "up", "down",
    "before", "after", "during", "through", "between", "above", "below", "further", "other",
    "more", "most", "few"
))
_NON_WORD = re.compile(r"[^a-z0-9]+")


def slug(text: str, limit: int = SLUG_LIMIT) -> str:
    """``Fix: the Login button!`` -> ``fix-login-button``: at most ``limit`` characters,
    cut at a word's end where one is near."""
    words: list[str] = []
    for word in _NON_WORD.split(text.lower()):
        if word and word not in FILLER and (not words or words[-1] != word):
            words.append(word)
    out = "-".join(words)
    if len(out) > limit:
        cut = out.rfind("-", 0, limit + 1)
        out = out[:cut] if cut > 0 else out[:limit]
    return out.strip("-")


def display_name(rendered: str, nonce: str, project: str) -> str:
    """A job's name from its rendered ``name`` template: slug and nonce (the project's name
    in front of the slug is dropped; it says nothing within the project)."""
    name = slug(rendered)
    prefix = slug(project) + "-" if project else ""
    if prefix != "-" and name.startswith(prefix):
        name = name[len(prefix):]
    return f"{name}-{nonce}" if name else nonce


def command_job_name(values: dict[str, Any], positionals: tuple[str, ...]) -> str | None:
    """The name of a job a command starts when its ``job`` has no ``name`` template: the
    argument called ``name``, else the first positional argument; None without either."""
    for key in ("name", *positionals[:1]):
        value = values.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
