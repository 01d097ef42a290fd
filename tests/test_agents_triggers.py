"""Agent triggers read from the screen, through the installed CLI with the fake agent in real
tmux: on_prompt (a permission or question prompt) and on_error (an error of a named type)."""

from __future__ import annotations

import time
from pathlib import Path

import test_agents
from conftest import Project, wait_until
from test_agents import AgentProject, finish

ap = test_agents.ap  # the fixture: a project whose agent is the fake agent


def test_a_permission_prompt_escalates_with_its_question_and_options(ap: AgentProject):
    ap.setup('on_dead = "done"', "--ask", idle="30s")
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    job = ap.job()
    assert job["waiting_reason"] == ("agent 'helper' asks: Do you want to proceed? "
                                     "[1. Yes; 2. No, and tell me what to do differently]")
    ap.oj("job", "resume", job["id"], "-m", "1")
    wait_until(lambda: [e["line"] for e in ap.seen() if e["event"] == "answer"] == ["1"],
               "the answer to reach the agent")
    ap.oj("agent", "send", job["id"], "exit 0")
    code, err = finish(run)
    assert code == 0, err
    assert "asks: Do you want to proceed?" in ap.log_text(job["id"])


def test_a_permission_prompt_is_a_question_decision_with_the_agents_own_options(
        ap: AgentProject):
    ap.setup('on_dead = "done"', "--ask", idle="30s")
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    [decision] = ap.json("decision", "list")
    assert decision["source"] == "question"
    assert [o["label"] for o in decision["options"]] == [
        "Yes", "No, and tell me what to do differently", "Answer in free text (-m)"]
    ap.oj("decision", "resolve", decision["id"], "2")
    wait_until(lambda: [e["line"] for e in ap.seen() if e["event"] == "answer"] == ["2"],
               "the chosen option's number to reach the agent")
    ap.oj("agent", "send", ap.job()["id"], "exit 0")
    code, err = finish(run)
    assert code == 0, err


def test_on_prompt_answer_types_its_key_and_the_agent_goes_on(ap: AgentProject):
    ap.setup('''
      on_prompt = { action = "answer", key = "2" }
      on_idle   = { action = "nudge", message = "exit 0" }
      on_dead   = "done"
    ''', "--ask", idle="2s")
    ap.oj("run", "go")
    assert [e["line"] for e in ap.seen() if e["event"] == "answer"] == ["2"]
    assert ap.inputs() == ["exit 0"]  # idle after the answer: nudged, not asked again
    assert ap.job()["status"] == "done"
    assert "asks: Do you want to proceed? [1. Yes; 2. No" in ap.log_text(ap.job()["id"])


def test_a_prompt_is_not_mistaken_for_idleness_when_on_prompt_is_unset(ap: AgentProject):
    ap.setup('on_idle = "done"', "--ask", idle="1s")
    run = ap.background("run", "go")
    # on_idle = done would end the step; the prompt escalates (the default) instead
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    assert ap.job()["waiting_reason"].startswith("agent 'helper' asks: ")
    ap.oj("job", "cancel", ap.job()["id"])
    finish(run)


PROMPT_CHECKED = """\
agent "a" {
  run       = "x"
  on_prompt = "answer"
  on_idle   = { action = "answer", key = "1" }
  on_dead   = { action = "done", key = "1" }
}
"""


def test_runbook_check_refuses_an_answer_without_a_key_or_off_a_prompt(project: Project):
    project.write("agents.hcl", PROMPT_CHECKED)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    f = ".oj/runbooks/agents.hcl"
    assert proc.stderr.splitlines()[:-1] == [
        f"{f}:3: agent 'a' on_prompt action 'answer' needs key = \"KEYS\" (typed into the "
        "prompt, then Enter: \"1\", \"y\")",
        f"{f}:4: agent 'a' on_idle action 'answer' cannot be used here: only a prompt is "
        "answered; use one of nudge, done, escalate, gate, fail, auto",
        f"{f}:5: agent 'a' on_dead key is only for action 'answer', not 'done'",
    ]


def test_a_rate_limited_agent_goes_on_by_itself_after_the_wait(ap: AgentProject):
    ap.setup('''
      on_error = { rate_limited = { action = "resume", after = "2s", message = "exit 0" },
                   unauthorized = "fail" }
      on_idle  = "escalate"
      on_dead  = "done"
    ''', "--print", "API Error: 429 Too Many Requests (rate_limit_error)", idle="30s")
    started = time.monotonic()
    ap.oj("run", "go")
    assert time.monotonic() - started >= 2  # it waited before going on
    assert ap.inputs() == ["exit 0"]  # typed into the live session, no restart
    assert len(ap.starts()) == 1
    job = ap.job()
    assert job["status"] == "done"
    assert "shows an error (rate_limited): API Error: 429 Too Many Requests " \
        "(rate_limit_error): resume after 2s" in ap.log_text(job["id"])


def test_each_error_type_takes_its_own_action_in_upstreams_list_form(ap: AgentProject):
    ap.setup('''
      on_error = [{ match = "rate_limited", action = "resume" },
                  { match = "unauthorized", action = "fail" },
                  { action = "escalate" }]
    ''', "--print", "Invalid API key · Please run /login", idle="30s")
    proc = ap.oj("run", "go", check=False)
    assert proc.returncode == 1
    assert "step 'work' failed (exit 1): agent 'helper' shows an error (unauthorized): " \
        "Invalid API key · Please run /login" in proc.stderr
    assert ap.inputs() == []


def test_an_error_type_without_an_action_takes_the_one_for_the_rest(ap: AgentProject):
    ap.setup('''
      on_error = { rate_limited = "fail", "*" = "escalate" }
    ''', "--print", "Error: Unable to connect to API (ECONNREFUSED)", idle="30s")
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    assert ap.job()["waiting_reason"] == ("agent 'helper' shows an error (no_internet): "
                                          "Error: Unable to connect to API (ECONNREFUSED)")
    ap.oj("job", "cancel", ap.job()["id"])
    finish(run)


ERROR_CHECKED = """\
agent "a" {
  run      = "x"
  on_error = { rate_limitd = "resume", unauthorized = { action = "nudge" },
               no_internet = { action = "resume", after = "soon" } }
}
"""


def test_runbook_check_refuses_unknown_error_types_and_actions_off_their_trigger(
        project: Project):
    project.write("agents.hcl", ERROR_CHECKED)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    f = ".oj/runbooks/agents.hcl"
    assert proc.stderr.splitlines()[:-1] == [
        f"{f}:3: agent 'a' on_error type 'rate_limitd' is not one of unauthorized, "
        "out_of_credits, no_internet, rate_limited; did you mean 'rate_limited'?",
        f"{f}:3: agent 'a' on_error unauthorized action 'nudge' cannot be used here: it "
        "does not fit this trigger; use one of escalate, gate, fail, resume",
        f"{f}:4: agent 'a' on_error no_internet after: invalid duration 'soon'; use e.g. "
        "\"30s\", \"5m\", \"1h30m\"",
    ]


def test_on_idle_auto_leaves_an_idle_agent_alone_until_it_exits(ap: AgentProject):
    ap.setup('on_idle = "auto"')
    run = ap.background("run", "go")
    wait_until(lambda: [a["status"] for a in ap.agents()] == ["idle"], "the agent to idle",
               timeout=30)
    job = ap.job()
    assert job["status"] == "running" and ap.inputs() == []  # idle, and nothing done to it
    ap.oj("agent", "send", job["id"], "exit 0")
    code, err = finish(run)
    assert code == 0, err
    assert "exited (status 0): done (on_idle auto)" in ap.log_text(job["id"])


def test_a_restarted_agent_gets_its_resume_prime_instead_of_its_startup_one(ap: AgentProject):
    ap.setup('''
      prime   = { startup = "echo fresh start", resume = ["echo resumed", "echo from log"] }
      on_dead = { action = "resume", message = "carry on" }
    ''', "--exit", "3")
    run = ap.background("run", "go")
    wait_until(lambda: ap.status() == "waiting", "the job to wait", timeout=30)
    base = f"work in {ap.root}"
    assert [s["prompt"] for s in ap.starts()] == [
        f"fresh start\n\n{base}", f"resumed\n\nfrom log\n\n{base}\n\ncarry on"]
    ap.oj("job", "cancel", ap.job()["id"])
    finish(run)


def test_a_compacted_agent_is_typed_its_compact_prime(ap: AgentProject):
    ap.setup('''
      prime   = { compact = "echo the issue is 42" }
      on_idle = { action = "nudge", message = "exit 0" }
      on_dead = "done"
    ''', "--print", "✻ Conversation compacted (ctrl+o for history)", idle="2s")
    ap.oj("run", "go")
    assert ap.inputs() == ["the issue is 42", "exit 0"]
    assert "its context was compacted: compact prime typed in" in ap.log_text(ap.job()["id"])


def test_max_concurrency_holds_a_second_agent_until_the_first_ends(ap: AgentProject):
    ap.setup('''
      max_concurrency = 1
      on_idle = "auto"
      on_dead = "done"
    ''')
    first = ap.background("run", "go")
    wait_until(lambda: len(ap.agents()) == 1, "the first agent to start", timeout=30)
    second = ap.background("run", "go")
    jobs = lambda: ap.json("job", "list")  # noqa: E731
    wait_until(lambda: len(jobs()) == 2 and "waits for a slot: 1 of max_concurrency 1 "
               "running" in ap.log_text(jobs()[1]["id"]), "the second job to wait",
               timeout=30)
    (agent,) = ap.agents()
    assert agent["job"] == jobs()[0]["id"] and len(ap.starts()) == 1
    ap.oj("agent", "send", agent["job"], "exit 0")
    assert finish(first)[0] == 0
    wait_until(lambda: [a["job"] for a in ap.agents()] == [jobs()[1]["id"]],
               "the second agent to start", timeout=30)
    ap.oj("agent", "send", jobs()[1]["id"], "exit 0")
    assert finish(second)[0] == 0


PRIME_CHECKED = """\
agent "a" {
  run             = "x"
  prime           = { startup = "echo hi", restart = "echo again" }
  max_concurrency = 0
}
"""


def test_runbook_check_refuses_an_unknown_prime_source_and_no_concurrency(project: Project):
    project.write("agents.hcl", PRIME_CHECKED)
    proc = project.oj("runbook", "check", check=False)
    assert proc.returncode == 1
    f = ".oj/runbooks/agents.hcl"
    assert proc.stderr.splitlines()[:-1] == [
        f"{f}:3: agent 'a' prime source 'restart' is not one of startup, resume, clear, "
        "compact; did you mean 'startup'?",
        f"{f}:4: agent 'a' max_concurrency is 0, expected a whole number >= 1",
    ]


def test_a_suspended_job_keeps_its_transcript_and_resume_goes_on_with_it(ap: AgentProject):
    ap.setup('''
      on_idle = "auto"
      on_dead = "done"
    ''')
    run = ap.background("run", "go")
    wait_until(lambda: ap.agents(), "the agent to start", timeout=30)
    job = ap.job()
    ap.oj("agent", "send", job["id"], "remember the word marmalade")
    wait_until(lambda: "got: remember the word marmalade" in
               ap.oj("agent", "logs", job["id"][:5]).stdout, "the transcript to show it")
    out = ap.oj("job", "suspend", job["id"][:5])
    assert "suspended" in out.stderr
    job = ap.job()
    assert job["status"] == "waiting" and job["waiting_reason"].startswith("suspended by ")
    shown = ap.json("agent", "show", job["id"])
    assert shown["status"] == "suspended"
    assert "got: remember the word marmalade" in Path(shown["transcript"]).read_text()
    assert "got: remember the word marmalade" in ap.oj("agent", "logs", job["id"]).stdout
    again = ap.oj("job", "suspend", job["id"], check=False)
    assert (again.returncode, again.stderr) == (
        1, f"oj: job {job['id']} has no running agent to suspend (it is waiting)\n")
    ap.oj("resume", job["id"][:5])  # the shortcut of oj job resume
    wait_until(lambda: len(ap.starts()) == 2, "the agent to start again", timeout=30)
    prompt = ap.starts()[1]["prompt"]
    assert prompt.startswith(f"work in {ap.root}\n\nWhere your previous session stopped")
    assert "got: remember the word marmalade" in prompt
    assert "You were suspended" in prompt
    assert ap.starts()[1]["cwd"] == ap.starts()[0]["cwd"]  # the same workspace
    wait_until(lambda: ap.job()["status"] == "running" and ap.agents(), "it to run again")
    ap.oj("agent", "send", job["id"], "exit 0")
    code, err = finish(run)
    assert code == 0, err
    assert ap.job()["status"] == "done"


def test_agent_kill_runs_on_dead_and_wait_returns_once_the_agent_is_idle(ap: AgentProject):
    ap.setup('on_idle = "auto"\n on_dead = "fail"')
    run = ap.background("run", "go")
    wait_until(lambda: ap.agents(), "the agent to start", timeout=30)
    job_id = ap.job()["id"]
    waited = ap.oj("agent", "wait", job_id, "--timeout", "30s")
    assert waited.stderr == f"job {job_id}: agent idle\n"
    assert ap.oj("peek", job_id[:4]).stdout.startswith("fake agent: started")
    ap.oj("agent", "kill", job_id)
    code, _ = finish(run)
    assert code == 1
    assert "exited (killed): fail" in ap.log_text(job_id)
    assert ap.json("agent", "show", job_id)["status"] == "ended"
