"""Runbook imports: ``import "oj/NAME" { alias = "x"  const "k" { value = ... } }`` and
``import "./other.hcl"``, resolved into plain blocks before validation.

An import loads a library's files (or one project file) with the import's consts set
(``ojd.runbook.consts``); with an alias, every entity it defines is named ``ALIAS:NAME`` and
its references to its own entities follow. A project file that some file imports is loaded
only through its imports. Pure: the caller passes a way to fetch a library's files.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import replace

from ojd.runbook import consts
from ojd.runbook.hcl import Attribute, Block

LIBRARY_PREFIX = "oj/"
# kinds an import's entities come in, and the kind whose namespace each shares
ENTITIES = {"command": "command", "queue": "queue", "worker": "worker",
            "pipeline": "pipeline", "job": "pipeline", "agent": "agent", "cron": "cron"}
# (kind of block, field) -> which kind the names in `{ KEY = "NAME" }` belong to, by KEY
_REFS = {
    ("worker", "source"): {"queue": "queue"},
    ("worker", "handler"): {"pipeline": "pipeline", "job": "pipeline"},
    ("worker", "run"): {"pipeline": "pipeline", "job": "pipeline"},
    ("command", "run"): {"pipeline": "pipeline", "job": "pipeline", "agent": "agent"},
    ("cron", "run"): {"pipeline": "pipeline", "job": "pipeline"},
    ("step", "run"): {"agent": "agent", "job": "pipeline", "pipeline": "pipeline"},
}

# a library: its files as (display name, parsed body), or None when there is no such one
Library = Callable[[str], "list[tuple[str, Block]] | None"]


class _Resolver:
    def __init__(self, files: dict[str, Block], library: Library,
                 libraries: list[str]) -> None:
        self.files = files
        self.library = library
        self.libraries = libraries
        self.problems: list[str] = []
        self.warnings: list[str] = []
        # (namespace, name) -> "file:line" of the import (or file) that brought it in
        self.owner: dict[tuple[str, str], str] = {}
        self.visited: set[str] = set()

    def load(self, file: str, body: Block, given: dict[str, consts.Given] | None,
             given_at: str | None, chain: tuple[str, ...]) -> list[tuple[str, Block]]:
        self.visited.add(file)
        settled, problems, warnings = consts.settle(file, body, given, given_at)
        self.problems += problems
        self.warnings += warnings
        out = [(file, replace(settled, blocks=tuple(b for b in settled.blocks
                                                    if b.type != "import")))]
        for block in settled.blocks:
            if block.type == "import":
                out += self.import_(file, block, chain)
        return out

    def import_(self, file: str, block: Block, chain: tuple[str, ...]
                ) -> list[tuple[str, Block]]:
        at = f"{file}:{block.line}"
        if len(block.labels) != 1 or not block.labels[0]:
            self.problems.append(f'{at}: import needs exactly one source: import "oj/NAME" '
                                 '{ ... } or import "./file.hcl"')
            return []
        source = block.labels[0]
        alias = None
        given: dict[str, consts.Given] = {}
        for attr in block.attributes:
            if attr.name == "alias" and isinstance(attr.value, str) and attr.value:
                alias = attr.value
            else:
                self.problems.append(f"{file}:{attr.line}: unknown field '{attr.name}' in "
                                     'import; an import takes alias = "NAME" and const blocks')
        for sub in block.blocks:
            value = sub.attribute("value")
            if sub.type != "const" or len(sub.labels) != 1:
                self.problems.append(f"{file}:{sub.line}: unknown block '{sub.type}' in import;"
                                     ' set consts with const "NAME" { value = "..." }')
            elif value is None or not isinstance(value.value, str):
                self.problems.append(f"{file}:{sub.line}: const '{sub.labels[0]}' in an import "
                                     'needs value = "..."')
            else:
                given[sub.labels[0]] = consts.Given(value.value, sub.line)
        targets = self.targets(file, at, source)
        if targets is None:
            return []
        blocks: list[tuple[str, Block]] = []
        for target, body in targets:
            if target in chain:
                cycle = " -> ".join((*chain[chain.index(target):], target))
                self.problems.append(f"{at}: import cycle: {cycle}; remove one of the imports")
                continue
            blocks += self.load(target, body, given, at, (*chain, target))
        return self.claim(at, source, blocks, alias)

    def targets(self, file: str, at: str, source: str) -> list[tuple[str, Block]] | None:
        if source.startswith(LIBRARY_PREFIX):
            found = self.library(source[len(LIBRARY_PREFIX):])
            if found is None:
                self.problems.append(f"{at}: no library '{source}'; available: "
                                     + (", ".join(LIBRARY_PREFIX + n for n in self.libraries)
                                        or "none"))
            return found
        target = posixpath.normpath(posixpath.join(posixpath.dirname(file), source))
        if target not in self.files:
            self.problems.append(f"{at}: import '{source}' names {target}, which is not a "
                                 "runbook file of the project; import a file beside the "
                                 'runbooks by its relative path, or a library as "oj/NAME"')
            return None
        return [(target, self.files[target])]

    def claim(self, at: str, source: str, blocks: list[tuple[str, Block]], alias: str | None
              ) -> list[tuple[str, Block]]:
        """The imported blocks, renamed under ``alias``; a name another import (or the
        project) already has is a problem at this import."""
        names = {(ENTITIES[b.type], b.labels[0]) for _f, body in blocks for b in body.blocks
                 if b.type in ENTITIES and len(b.labels) == 1}
        rename = ({key: f"{alias}:{key[1]}" for key in names} if alias else {})
        out = []
        for file, body in blocks:
            kept = []
            for b in body.blocks:
                if b.type in ENTITIES and len(b.labels) == 1:
                    key = (ENTITIES[b.type], b.labels[0])
                    final = (key[0], rename.get(key, key[1]))
                    first = self.owner.get(final)
                    if first is not None and first != at:
                        self.problems.append(
                            f"{at}: import '{source}' defines {b.type} '{final[1]}', which "
                            f"{first} defines too; give one of the imports an alias")
                        continue
                    self.owner[final] = at
                kept.append(_renamed(b, rename, None) if rename else b)
            out.append((file, replace(body, blocks=tuple(kept))))
        return out


def _renamed(block: Block, rename: dict[tuple[str, str], str], parent: str | None) -> Block:
    labels = block.labels
    if block.type in ENTITIES and len(labels) == 1:
        labels = (rename.get((ENTITIES[block.type], labels[0]), labels[0]),)
    kind = "step" if block.type == "step" else block.type
    attributes = tuple(_renamed_ref(a, _REFS.get((kind, a.name)), rename)
                       for a in block.attributes)
    return replace(block, labels=labels, attributes=attributes,
                   blocks=tuple(_renamed(b, rename, block.type) for b in block.blocks))


def _renamed_ref(attr: Attribute, keys: dict[str, str] | None,
                 rename: dict[tuple[str, str], str]) -> Attribute:
    if keys is None or not isinstance(attr.value, dict):
        return attr
    value = {k: (rename.get((keys[k], v), v) if k in keys and isinstance(v, str) else v)
             for k, v in attr.value.items()}
    return replace(attr, value=value)


def resolve(files: list[tuple[str, Block]], library: Library, libraries: list[str]
            ) -> tuple[list[tuple[str, Block]], list[str], list[str]]:
    """Every file with its consts settled and its imports in place of ``import`` blocks:
    (files, problems, warnings). Project files that another file imports load only through
    those imports."""
    by_name = dict(files)
    imported = set()
    for file, body in files:
        for block in body.blocks:
            if block.type == "import" and len(block.labels) == 1 \
                    and not block.labels[0].startswith(LIBRARY_PREFIX):
                imported.add(posixpath.normpath(posixpath.join(posixpath.dirname(file),
                                                               block.labels[0])))
    r = _Resolver(by_name, library, libraries)
    out: list[tuple[str, Block]] = []
    for file, body in files:
        if file in imported:
            continue
        for b in body.blocks:  # the project's own names, so a clashing import is the problem
            if b.type in ENTITIES and len(b.labels) == 1:
                r.owner.setdefault((ENTITIES[b.type], b.labels[0]), f"{file}:{b.line}")
    for file, body in files:
        if file not in imported:
            out += r.load(file, body, None, None, (file,))
    for file, body in files:  # files that only import each other: the cycle is reported
        if file not in r.visited:
            out += r.load(file, body, None, None, (file,))
    return out, r.problems, r.warnings
