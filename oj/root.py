"""The click root group. Subcommand groups are imported only when invoked."""

from __future__ import annotations

import importlib

import click

from ojd import __version__
from ojd.errors import escaped

# name -> (module, attribute, help); a group's help names every subcommand, so `oj --help`
# is the whole command tree (tests/test_cli_reference.py checks it against click's)
SUBCOMMANDS = {
    "run": ("oj.commands.run", "run", "Run a runbook command."),
    "worker": ("oj.commands.worker", "worker",
               "Workers: start, stop, restart, resize, prune, enable, disable, logs, list."),
    "cron": ("oj.commands.cron", "cron",
             "Crons (timers): start, stop, enable, disable, once (a tick now), logs, list."),
    "systemd": ("oj.commands.systemd", "systemd", "oj's unit files: install, uninstall."),
    "metrics": ("oj.commands.metrics", "metrics",
                "The state as OpenMetrics text (printed, or served on --listen)."),
    "queue": ("oj.commands.queue", "queue",
              "Queues and items: push, list, logs, show, drop, retry, pause, resume, drain, "
              "prune, done, fail."),
    "job": ("oj.commands.job", "job",
            "Jobs: list, show, logs, wait, cancel, suspend, resume, rerun, dismiss, prune."),
    "agent": ("oj.commands.agent", "agent",
              "Agents: list, show, peek, attach, send, logs, kill, suspend, resume, wait, "
              "prune."),
    "decision": ("oj.commands.decision", "decision",
                 "Decisions waiting jobs need from a person: list, show, resolve, review."),
    # shortcuts: a job (or its agent) by ID prefix
    "show": ("oj.commands.job", "show_cmd", "oj job show ID."),
    "logs": ("oj.commands.job", "logs_cmd", "oj job logs ID [-f]."),
    "cancel": ("oj.commands.job", "cancel_cmd", "oj job cancel ID..."),
    "resume": ("oj.commands.job", "resume_cmd", "oj job resume ID [-m MESSAGE]."),
    "peek": ("oj.commands.agent", "peek_cmd", "oj agent peek ID."),
    "attach": ("oj.commands.agent", "attach_cmd", "oj agent attach ID."),
    "runbook": ("oj.commands.runbook", "runbook", "The project's runbooks: check, list."),
    "state": ("oj.commands.state", "state",
              "The state (WAL directory or PostgreSQL): check, compact, export, import."),
    "status": ("oj.commands.status", "status",
               "Workers, jobs, queues, crons and agents at a glance; what needs a person in red."),
    "web": ("oj.commands.web", "web",
            "The dashboard in a browser: workers, queues, jobs, crons; live, with actions."),
    "workspace": ("oj.commands.workspace", "workspace", "Job workspaces: list, prune."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        return getattr(module, entry[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # help lines come from the table, so `oj --help` imports no command module
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][2]) for name in sorted(SUBCOMMANDS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oj")
@click.option("--project", envvar="OJ_PROJECT", metavar="DIR|NAME",
              help="Project directory, or the name of a project recorded in the state dir "
                   "(default: nearest directory above with .oj/).")
@click.pass_context
def cli(ctx: click.Context, project: str | None) -> None:
    """oj runs runbook-defined work in the background; every worker is a systemd service."""
    from oj.app import App  # lazy: oj --help and --version never build it

    ctx.obj = App(project)


def run(argv: list[str]) -> int:
    """Run the CLI; a command's int return value is the exit status."""
    try:
        rv = cli.main(args=argv, prog_name="oj", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.UsageError as e:
        if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
            e.show()  # `oj worker` alone: the group's help is the answer (click >= 8.2)
            return 2
        # one line, like every oj error: the problem, then where the full usage is
        message = e.format_message().rstrip(".")
        command = e.ctx.command_path if e.ctx is not None else "oj"
        click.echo(f"oj: {message if message.isprintable() else escaped(message)}; "
                   f"see '{command} --help'", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return rv if isinstance(rv, int) else 0
