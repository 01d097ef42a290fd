"""Upstream's command run = { agent = "NAME" }: a job of one agent step."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_agents import AgentProject, fake

from ojd.errors import RunbookError
from ojd.project import parse

RUNBOOK = """
command "doctor" {
  args = "<topic>"
  run  = { agent = "helper" }
}

agent "helper" {
  run     = "no-such-agent-program"
  prompt  = "look into ${var.topic}"
  on_dead = "done"
}
"""


def test_a_command_runs_an_agent_as_a_job_of_its_own(tmp_path: Path):
    ap = AgentProject(tmp_path / "project", tmp_path / "state")
    ap.write("a.hcl", RUNBOOK)
    ap.log = ap.root / "agent.jsonl"
    ap.command = fake("--exit", "0")
    ap.oj("run", "doctor", "the build")
    job = ap.job()
    assert (job["status"], job["pipeline"]) == ("done", "agent:doctor")
    assert [h["step"] for h in job["history"]] == ["agent"]
    assert [s["prompt"] for s in ap.starts()] == ["look into the build"]


def test_a_command_naming_an_unknown_agent_is_an_error_at_its_run():
    with pytest.raises(RunbookError) as e:
        parse([("rb.hcl", b'command "c" {\n  run = { agent = "helpr" }\n}\n'
                          b'agent "helper" {\n  run = "claude"\n}\n')])
    assert e.value.problems == ["rb.hcl:2: command 'c' agent 'helpr' is not defined; did you "
                                "mean 'helper'?"]
