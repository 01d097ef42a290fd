"""Runbook constants: ``const "NAME" { value = ... | default = ... }`` blocks, settled when a
file is loaded.

A const is fixed text, known before anything runs, so it is pasted into the file's strings
before validation, as upstream Odd Jobs does: ``${const.NAME}`` shell-quoted (a value that
is one plain word stays as it is), ``${raw(const.NAME)}`` as written, and
``%{ if const.NAME == "x" } ... %{ else } ... %{ endif }`` keeps one branch (``~`` beside a
brace trims the whitespace on that side, as in HCL). Pure: blocks in, blocks out.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, replace

from ojd.runbook.hcl import Attribute, Block

_FIELDS = ("value", "default")
_REF = re.compile(r"\$\{\s*(?:raw\(\s*const\.([A-Za-z0-9_-]+)\s*\)|const\.([A-Za-z0-9_-]+))\s*\}")
_DIRECTIVE = re.compile(r"(\s*)%\{(~?)\s*(if\s+[^}~]*?|else|endif)\s*(~?)\}(\s*)")
_CONDITION = re.compile(r'if\s+const\.([A-Za-z0-9_-]+)\s*(==|!=)\s*"((?:[^"\\]|\\.)*)"\s*\Z')


@dataclass(frozen=True)
class Given:
    """A value set from outside the file (an import's ``const`` block) and where."""

    value: str
    line: int


def declared(body: Block) -> dict[str, Block]:
    """The file's const blocks by name (the first of a name wins; build reports the rest)."""
    out: dict[str, Block] = {}
    for block in body.blocks:
        if block.type == "const" and len(block.labels) == 1:
            out.setdefault(block.labels[0], block)
    return out


def settle(file: str, body: Block, given: dict[str, Given] | None = None,
           given_at: str | None = None) -> tuple[Block, list[str], list[str]]:
    """``body`` without its const blocks, their values pasted in; with the problems and the
    warnings (``file:line: ...``) found. ``given`` are values an import sets, reported at
    ``given_at`` (``file:line`` of the import) when they name no const of the file."""
    problems: list[str] = []
    warnings: list[str] = []
    given = given or {}
    values: dict[str, str] = {}
    seen: dict[str, int] = {}
    for block in body.blocks:
        if block.type != "const":
            continue
        if len(block.labels) != 1 or not block.labels[0]:
            problems.append(f'{file}:{block.line}: const needs exactly one name: '
                            'const "NAME" { default = "..." }')
            continue
        name = block.labels[0]
        if name in seen:
            problems.append(f"{file}:{block.line}: const '{name}' is already defined at "
                            f"{file}:{seen[name]}; rename one of them")
            continue
        seen[name] = block.line
        fields = {a.name: a for a in block.attributes}
        for a in block.attributes:
            if a.name not in _FIELDS:
                problems.append(f"{file}:{a.line}: unknown field '{a.name}' in const; use "
                                "value (fixed) or default (an import may set it)")
            elif not isinstance(a.value, str):
                problems.append(f"{file}:{a.line}: const '{name}' {a.name} must be a string")
        for sub in block.blocks:
            problems.append(f"{file}:{sub.line}: unknown block '{sub.type}' in const")
        if "value" in fields and "default" in fields:
            problems.append(f"{file}:{fields['default'].line}: const '{name}' has both "
                            "'value' and 'default'; keep one of them")
        if name in given:
            values[name] = given[name].value
        elif isinstance(getattr(fields.get("value"), "value", None), str):
            values[name] = fields["value"].value
        elif isinstance(getattr(fields.get("default"), "value", None), str):
            values[name] = fields["default"].value
        elif given_at is not None:
            problems.append(f"{given_at}: const '{name}' is required by {file}:{block.line}; "
                            f'set it in the import: const "{name}" {{ value = "..." }}')
        else:  # a library file loaded on its own, as upstream loads one: a warning
            values[name] = ""
            warnings.append(f"{file}:{block.line}: warning: const '{name}' has no value and "
                            "renders empty; import the file and set it, or give it "
                            'value = "..." or default = "..."')
    for name, g in given.items():
        if name not in seen:
            known = ", ".join(sorted(seen)) or "none"
            at = f"{given_at.rpartition(':')[0]}:{g.line}" if given_at else file
            problems.append(f"{at}: const '{name}' is not declared by {file} "
                            f"(its consts: {known})")
    out = _Paste(file, values, problems, warnings).block(body)
    return replace(out, blocks=tuple(b for b in out.blocks if b.type != "const")), \
        problems, warnings


class _Paste:
    def __init__(self, file: str, values: dict[str, str], problems: list[str],
                 warnings: list[str]) -> None:
        self.file = file
        self.values = values
        self.problems = problems
        self.warnings = warnings
        self.warned: set[str] = set()

    def block(self, block: Block) -> Block:
        return replace(block, attributes=tuple(self.attribute(a) for a in block.attributes),
                       blocks=tuple(self.block(b) for b in block.blocks))

    def attribute(self, attr: Attribute) -> Attribute:
        return replace(attr, value=self.value(attr.value, attr.value_line or attr.line))

    def value(self, value: object, line: int) -> object:
        if isinstance(value, str):
            return self.text(value, line)
        if isinstance(value, list):
            return [self.value(v, line) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v, line) for k, v in value.items()}
        return value

    def text(self, text: str, line: int) -> str:
        if "const." not in text:
            return text
        text = self.directives(text, line)
        return _REF.sub(lambda m: self.ref(m, text, line), text)

    def ref(self, m: re.Match, text: str, line: int) -> str:
        raw_name, name = m.group(1), m.group(2)
        key = raw_name or name
        if key not in self.values:
            at = line + text.count("\n", 0, m.start())
            if key not in self.warned:
                self.warned.add(key)
                self.warnings.append(
                    f"{self.file}:{at}: warning: const '{key}' is not defined in this file; "
                    "it renders empty (a file that only a sibling's consts complete is "
                    "meant to be imported with them)")
            return ""
        value = self.values[key]
        return value if raw_name else shlex.quote(value)

    def directives(self, text: str, line: int) -> str:
        """Keep the branches of ``%{ if const... }`` whose condition holds."""
        out: list[str] = []
        stack: list[list[bool]] = []  # [condition, in else] per open if
        pos = 0
        for m in _DIRECTIVE.finditer(text):
            lead, strip_before, word, strip_after, trail = m.groups()
            keep = all(c != e for c, e in stack)
            if keep:
                out.append(text[pos:m.start()] + ("" if strip_before else lead))
            at = line + text.count("\n", 0, m.start() + len(lead))
            if word.startswith("if"):
                cond = _CONDITION.match(word)
                if cond is None:
                    self.problems.append(f"{self.file}:{at}: %{{ {word} }}: only "
                                         '%{ if const.NAME == "TEXT" } (or !=) is understood')
                    stack.append([True, False])
                else:
                    name, op, literal = cond.groups()
                    current = self.values.get(name, "")
                    stack.append([(current == literal) == (op == "=="), False])
            elif not stack:
                self.problems.append(f"{self.file}:{at}: %{{ {word} }} without %{{ if }}")
            elif word == "else":
                stack[-1][1] = True
            else:
                stack.pop()
            if all(c != e for c, e in stack) and not strip_after:
                out.append(trail)
            pos = m.end()
        if stack:
            self.problems.append(f"{self.file}:{line}: %{{ if }} without %{{ endif }}")
        out.append(text[pos:] if all(c != e for c, e in stack) else "")
        return "".join(out)
