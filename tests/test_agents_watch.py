"""The pure core of agent watching: attempts, cooldowns, the prompt's place in the command."""

from __future__ import annotations

import shlex

from ojd.agents.watch import Action, Attempts, env_override_name, render_command


def test_an_action_fires_up_to_its_attempts_then_escalates_with_the_reason():
    attempts = Attempts()
    nudge = Action("nudge", "go on", attempts=2, cooldown=5.0)
    first, second, third = (attempts.plan("on_idle", nudge) for _ in range(3))
    assert (first.action, first.delay) == (nudge, 0.0)  # the first try does not wait
    assert (second.action, second.delay) == (nudge, 5.0)  # later ones wait the cooldown
    assert third.action.kind == "escalate"
    assert third.reason == "on_idle: nudge already tried 2 times"


def test_attempts_count_per_trigger_and_start_again_after_a_reset():
    attempts = Attempts()
    once = Action("resume")
    assert attempts.plan("on_dead", once).action.kind == "resume"
    assert attempts.plan("on_idle", Action("nudge")).action.kind == "nudge"
    assert attempts.plan("on_dead", once).reason == "on_dead: resume already tried once"
    attempts.reset()
    assert attempts.plan("on_dead", once).action.kind == "resume"


def test_forever_never_runs_out():
    attempts = Attempts()
    forever = Action("nudge", attempts=None)
    assert all(attempts.plan("on_idle", forever).action is forever for _ in range(50))


def test_the_default_actions_are_done_when_idle_and_escalate_when_dead():
    assert Action.of(None, "on_idle").kind == "done"
    assert Action.of(None, "on_dead").kind == "escalate"
    assert Action.of({"action": "recover"}, "on_dead").kind == "resume"


def test_the_prompt_is_one_quoted_word_appended_or_where_the_command_says():
    prompt = "fix it; rm -rf / $(boom) 'quoted'"
    assert shlex.split(render_command("agent --yes", prompt)) == ["agent", "--yes", prompt]
    assert shlex.split(render_command("agent -p ${prompt} --end", prompt)) == \
        ["agent", "-p", prompt, "--end"]
    assert render_command("agent", "") == "agent"


def test_the_override_variable_names_the_agent_upper_cased():
    assert env_override_name("bugs") == "OJ_AGENT_BUGS_COMMAND"
    assert env_override_name("merge-resolver.2") == "OJ_AGENT_MERGE_RESOLVER_2_COMMAND"


def test_a_prompt_in_quotes_of_the_command_stays_one_inert_word(tmp_path):
    """`run = "claude -p \"${prompt}\""`: the prompt (item text) lands inside the author's
    double quotes, where a single-quoted word would still expand $(...)."""
    import subprocess

    canary = tmp_path / "CANARY"
    prompt = f"fix it $(touch {canary}) `touch {canary}` \"q\" 's' $HOME"
    for command in ('printf "%s\\n" "${prompt}"', "printf '%s\\n' '${prompt}'",
                    'printf "%s\\n" ${prompt}', 'printf "%s\\n" "see: ${prompt}!"'):
        out = subprocess.run(["bash", "-c", render_command(command, prompt)],
                             capture_output=True, text=True, check=True).stdout
        assert prompt in out.splitlines()[0], (command, out)
        assert len(out.splitlines()) == 1, (command, out)
    assert not canary.exists()
