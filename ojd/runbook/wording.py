"""How runbook problems are worded: a value's type, a "did you mean", the end of a warning
about a path outside the project, a value in a context bash reads again, a crontab schedule
in systemd's spelling."""

from __future__ import annotations

from ojd.errors import closest
from ojd.runbook.crontab import NoTranslation, systemd_spelling
from ojd.runbook.template import ValueContext

# the end of a warning about a path that leads outside the project (``ojd.trust``)
OUTSIDE = (", outside the project: a worker refuses it when someone but root and the "
            "worker's user could change it; keep it in the project")
TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", dict: "an object",
               list: "a list", bool: "true or false"}


def did_you_mean(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = closest(word, options)
    return f"; did you mean '{close}'?" if close else ""


def type_name(value: object) -> str:
    """What a value is, in the words of error messages."""
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return "a number with a fraction" if value != int(value) else "a decimal number"
    for t, name in TYPE_NAMES.items():
        if isinstance(value, t):
            return name
    return f"a {type(value).__name__}"  # a TOML date, say


def context_warning(c: ValueContext) -> str:
    """What a ValueContext means for the runbook's author."""
    ref = f"${{{c.ref}}}"
    if c.kind == "int":
        return (f"{ref} is in shell arithmetic ({c.place}), which bash evaluates again: only "
                "a plain integer renders there, any other value is refused")
    if c.kind == "name":
        return (f"{ref} is a variable name ({c.place}), where bash evaluates an index a[...]: "
                "only letters, digits and _ render there")
    if c.kind == "pattern":
        return (f"{ref} is in a pattern or replacement ({c.place}), where bash runs <(...): "
                f"only a plain word renders there; for any value, assign it to a variable "
                f"first (v={ref}) and write $v there")
    if c.kind == "command":
        return (f"{ref} is the first word of a command: oj quotes it as one word, so the whole "
                f"value names one program; to run a trusted value as shell code, write "
                f"${{raw({c.ref})}}")
    return f"no value can go here: {c.place}"


def crontab_hint(schedule: str) -> str:
    """What a cron's crontab-style schedule is in systemd's calendar, or why it has none."""
    try:
        spelled = systemd_spelling(schedule)
    except NoTranslation as e:
        return (f"this is crontab syntax, which systemd's calendar cannot say directly: {e} "
                "(systemd.time(7); 'systemd-analyze calendar EXPR' tries one)")
    return (f"this is crontab syntax; systemd's calendar spells it schedule = \"{spelled}\" "
            "('systemd-analyze calendar' shows when it runs)")
