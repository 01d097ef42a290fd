"""Reading an agent's screen: the prompts that wait on a person and the errors on_error names."""

from __future__ import annotations

import pytest

from ojd.agents.screens import find_error, find_prompt

CLAUDE_PERMISSION = """\
╭──────────────────────────────────────────────╮
│ Bash command                                 │
│   rm -rf build/                              │
│ Do you want to proceed?                      │
│ ❯ 1. Yes                                     │
│   2. Yes, and don't ask again for rm         │
│   3. No, and tell Claude what to do (esc)    │
╰──────────────────────────────────────────────╯
"""

QUESTION = """\
Which database should the service use?
  1. PostgreSQL
  2. SQLite
  3. Something else
Enter to select · Esc to cancel
"""


def test_a_permission_prompt_in_a_box_is_read_with_its_numbered_choices():
    prompt = find_prompt(CLAUDE_PERMISSION)
    assert prompt is not None
    assert prompt.kind == "permission"
    assert prompt.text == "Do you want to proceed?"
    assert [key for key, _ in prompt.options] == ["1", "2", "3"]
    assert prompt.options[1][1] == "Yes, and don't ask again for rm"


def test_a_question_with_choices_and_a_key_hint_under_them_is_a_question():
    prompt = find_prompt(QUESTION)
    assert prompt is not None and prompt.kind == "question"
    assert prompt.summary() == ("Which database should the service use? "
                                "[1. PostgreSQL; 2. SQLite; 3. Something else]")


def test_a_one_line_yes_no_question_at_the_bottom_is_a_permission():
    prompt = find_prompt("Applied edit to app.py\nAllow command `make test`? (y/n)")
    assert prompt is not None and prompt.kind == "permission"
    assert prompt.options == (("y", "Yes"), ("n", "No"))


@pytest.mark.parametrize("screen", [
    "Plan:\n1. read the code\n2. fix the bug\nWorking...",  # a list, no question, output after
    CLAUDE_PERMISSION + "answered: 1\n",  # answered: output goes on under it
    "Do you want to proceed? (y/n)\ny\nproceeding",  # the question is no longer the last line
    "1. one\n3. three?\n",  # not numbered 1, 2, ...
])
def test_lists_and_answered_prompts_are_not_prompts(screen: str):
    assert find_prompt(screen) is None


@pytest.mark.parametrize(("line", "kind"), [
    ("API Error: 401 {\"type\":\"authentication_error\"} · Please run /login", "unauthorized"),
    ("Credit balance is too low", "out_of_credits"),
    ("Error: insufficient_quota: You exceeded your current quota", "out_of_credits"),
    ("API Error: Unable to connect to API (ECONNREFUSED)", "no_internet"),
    ("curl: (6) Could not resolve host: api.example.com", "no_internet"),
    ("API Error: 429 Too Many Requests: rate_limit_error", "rate_limited"),
    ("Claude usage limit reached. Your limit will reset at 5pm", "rate_limited"),
])
def test_error_lines_are_typed_as_on_error_names_them(line: str, kind: str):
    error = find_error(f"working on it\n{line}\n\n")
    assert error is not None and (error.type, error.line) == (kind, line)


def test_a_screen_without_an_error_line_has_no_error():
    assert find_error("fixed the bug\nall 12 tests passed\n") is None
