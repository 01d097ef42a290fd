"""The checks of a runbook once all its blocks are read: what refers to what (workers to
queues and pipelines, routes to steps, agents) and the templates of every script, with the
contexts values land in: part of the runbook builder (``ojd.runbook.validate``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ojd.runbook.argspec import ArgSpec
from ojd.runbook.model import Pipeline, Where
from ojd.runbook.template import NestingError, TemplateError, references
from ojd.runbook.wording import did_you_mean


class References:
    """The cross-checks of ``validate._Builder``: its fields and problems are its own."""

    def check_references(self) -> None:
        rb = self.rb
        for w in list(rb.workers.values()):  # a queue's poll serves workers without one
            queue = rb.queues.get(w.queue)
            if queue is not None and queue.poll and ("worker", w.name, "poll") not in self.at:
                rb.workers[w.name] = replace(w, poll=queue.poll)
        for w in rb.workers.values():
            source_line = self.line_of(("worker", w.name, "source"), w.where)
            handler_line = self.line_of(("worker", w.name, "handler"), w.where)
            if w.queue and w.queue not in rb.queues:
                self.p.add(w.where.file, source_line, f"worker '{w.name}' source queue "
                           f"'{w.queue}' is not defined" + did_you_mean(w.queue, list(rb.queues)))
            pipeline = rb.pipelines.get(w.pipeline)
            word = self.words.get(("worker", w.name), "pipeline")
            if w.pipeline and pipeline is None:
                self.p.add(w.where.file, handler_line, f"worker '{w.name}' handler {word} "
                           f"'{w.pipeline}' is not defined"
                           + did_you_mean(w.pipeline, list(rb.pipelines)))
            elif pipeline is not None and not pipeline.vars:
                self.p.add(w.where.file, handler_line, f"worker '{w.name}' handler {word} "
                           f"'{w.pipeline}' needs vars = [\"NAME\"] to receive the queue item")
            elif pipeline is not None:
                # the item fills the first var; any other must have a default
                for var in pipeline.vars[1:]:
                    if var not in pipeline.defaults:
                        self.p.add(w.where.file, handler_line, f"worker '{w.name}' handler "
                                   f"{word} '{w.pipeline}' var '{var}' needs a default "
                                   "(only the first var receives the queue item)")
                queue = rb.queues.get(w.queue)
                if queue is not None and queue.vars:
                    self.check_item_fields(w.name, queue.name, queue.vars, pipeline)
        for c in rb.commands.values():
            run_line = self.line_of(("command", c.name, "run"), c.where)
            if c.own is not None:  # run = { agent = ... }
                agent = c.own.steps["agent"].agent or ""
                if agent not in rb.agents:
                    self.p.add(c.where.file, run_line, f"command '{c.name}' agent '{agent}' is "
                               "not defined" + did_you_mean(agent, list(rb.agents)))
            elif c.pipeline and c.pipeline not in rb.pipelines:
                word = self.words.get(("command", c.name), "pipeline")
                self.p.add(c.where.file, run_line, f"command '{c.name}' {word} "
                           f"'{c.pipeline}' is not defined"
                           + did_you_mean(c.pipeline, list(rb.pipelines)))
            elif c.pipeline:
                self.check_command_vars(c.name, arg_names(c.args), rb.pipelines[c.pipeline],
                                        run_line)
            if c.run is not None:
                names = arg_names(c.args)
                self.check_templates(self.field_where(("command", c.name, "run"), c.where), c.run,
                                     {"args": names, "invoke": None, "var": names})
        for cron in rb.crons.values():
            run_at = self.field_where(("cron", cron.name, "run"), cron.where)
            if cron.run is not None:
                self.check_templates(run_at, cron.run, {"invoke": None})
                continue
            if not cron.pipeline:
                continue
            pipeline = rb.pipelines.get(cron.pipeline)
            if pipeline is None:
                word = self.words.get(("cron", cron.name), "pipeline")
                self.p.add(run_at.file, run_at.line, f"cron '{cron.name}' {word} "
                           f"'{cron.pipeline}' is not defined"
                           + did_you_mean(cron.pipeline, list(rb.pipelines)))
                continue
            # a tick gives its job no vars: each must have a default
            for var in pipeline.vars:
                if var not in pipeline.defaults:
                    self.p.add(run_at.file, run_at.line, f"cron '{cron.name}' "
                               f"{pipeline.spelling} '{cron.pipeline}' var '{var}' needs a "
                               "default (a cron's jobs are given no vars)")
        for q in rb.queues.values():
            if q.take_cmd:
                self.check_templates(self.field_where(("queue", q.name, "take"), q.where),
                                     q.take_cmd, {"item": None})
        for p in rb.pipelines.values():
            self.check_pipeline(p)

    def check_command_vars(self, name: str, args: tuple[str, ...], p: Pipeline,
                           line: int) -> None:
        """A command's job gets its arguments as vars: each var the pipeline needs must be
        one of them, or have a default. Said with the fix in view of the pipeline's other
        users: a worker gives it the item as its one first var."""
        missing = [v for v in p.vars if v not in args and v not in p.defaults]
        if not missing:
            return
        file = self.rb.commands[name].where.file
        gives = f"its arguments ({', '.join(args)})" if args else "no arguments"
        workers = [w for w in self.rb.workers.values() if w.pipeline == p.name]
        if workers:
            w = workers[0]
            self.p.add(file, line, f"{p.spelling} '{p.name}' cannot serve both worker '{w.name}' "
                       f"(the queue item as var '{p.vars[0]}') and command '{name}' "
                       f"({gives} as vars): command '{name}' gives no '{missing[0]}'; have "
                       f"it push to the worker's queue (run = \"oj queue push {w.queue} "
                       "--var KEY=${args.KEY} ...\") or give it a pipeline of its own")
            return
        self.p.add(file, line, f"command '{name}' runs {p.spelling} '{p.name}', which needs var "
                   f"'{missing[0]}', but gives {gives}" + did_you_mean(missing[0], list(args))
                   + f"; add <{missing[0]}> to its args or a default for it to the {p.spelling}")

    def check_item_fields(self, worker: str, queue: str, fields: tuple[str, ...],
                          p: Pipeline) -> None:
        """``${var.ITEM.KEY}`` in a worker's pipeline: KEY must be one of the queue's vars,
        the only keys its items have."""
        item = p.vars[0]
        for where, text in self.pipeline_texts(p):
            try:
                refs = references(text)
            except TemplateError:
                continue  # reported by check_templates
            for ref in refs:
                parts = ref.split(".")
                if parts[:2] != ["var", item] or len(parts) < 3 or parts[2] in fields:
                    continue
                line = where.line + text.count("\n", 0, max(text.find("${" + ref), 0))
                self.p.add(where.file, line, f"${{{ref}}}: queue '{queue}' items (worker "
                           f"'{worker}') have no field '{parts[2]}'"
                           + (did_you_mean(parts[2], list(fields))
                              or f"; their fields: {', '.join(fields)}"))

    def pipeline_texts(self, p: Pipeline) -> list[tuple[Where, str]]:
        """The templates of a pipeline with where each starts: name, locals, steps, notify."""
        out = []
        if p.job_name is not None:
            out.append((self.field_where(("pipeline", p.name, "name"), p.where), p.job_name))
        out += [(self.field_where(("local", p.name, n), p.where), v) for n, v in p.locals]
        out += [(self.field_where(("step", p.name, s.name, "run"), s.where), s.run)
                for s in p.steps.values() if s.run is not None]
        out += [(self.field_where(("step", p.name, s.name, "approve"), s.where), s.approve)
                for s in p.steps.values() if s.approve is not None]
        out += [(self.field_where(("notify", p.name, k), p.where), v)
                for k, v in p.notify.items() if k.startswith("on_")]
        return out

    def check_pipeline(self, p: Pipeline) -> None:
        for target, what in ((p.on_done, "on_done"), (p.on_fail, "on_fail"),
                             (p.on_cancel, "on_cancel")):
            if target and target not in p.steps:
                self.p.add(p.where.file, self.line_of(("pipeline", p.name, what), p.where),
                           f"{p.spelling} '{p.name}' {what} step "
                           f"'{target}' is not defined" + did_you_mean(target, list(p.steps)))
        known: dict[str, Any] = {"var": p.vars + tuple(p.defaults), "invoke": None,
                                 "workspace": ("root", "nonce"), "local": (),
                                 "source": ("root", "nonce", "branch")}
        if p.job_name is not None:  # rendered when the job is created: no locals yet
            self.check_templates(self.field_where(("pipeline", p.name, "name"), p.where),
                                 p.job_name, {k: v for k, v in known.items() if k != "local"})
        for local_name, value in p.locals:
            self.check_templates(self.field_where(("local", p.name, local_name), p.where),
                                 value, known)
            known["local"] = known["local"] + (local_name,)
        for s in p.steps.values():
            for target, what in ((s.on_done, "on_done"), (s.on_fail, "on_fail"),
                                 (s.on_cancel, "on_cancel")):
                if target and target not in p.steps:
                    self.p.add(s.where.file, self.line_of(("step", p.name, s.name, what),
                                                          s.where), f"step '{s.name}' {what} step "
                               f"'{target}' is not defined in {p.spelling} '{p.name}'"
                               + did_you_mean(target, list(p.steps)))
            run_at = self.field_where(("step", p.name, s.name, "run"), s.where)
            if s.agent and s.agent not in self.rb.agents:
                self.p.add(s.where.file, run_at.line, f"step '{s.name}' agent '{s.agent}' is "
                           "not defined" + did_you_mean(s.agent, list(self.rb.agents)))
            if s.run is not None:
                self.check_templates(run_at, s.run, known)
            if s.approve is not None:
                self.check_templates(self.field_where(("step", p.name, s.name, "approve"),
                                                      s.where), s.approve, known)
        for key, value in p.notify.items():
            if not key.startswith("on_"):  # exec, webhook: a command and a URL, as written
                continue
            self.check_templates(self.field_where(("notify", p.name, key), p.where), value,
                                 known)

    def check_templates(self, where: Where, text: str, known: dict[str, Any]) -> None:
        """Every ``${ns.name}`` must name something that will exist when the text renders."""
        try:
            refs = references(text)
        except TemplateError as e:
            # too deep: the line where the level past the limit opens (as for references)
            at = text.count("\n", 0, e.offset) if isinstance(e, NestingError) else 0
            self.p.add(where.file, where.line + at, str(e))
            return
        for ref in refs:
            # the line holding the reference: scripts are mostly heredocs, a line per line
            line = where.line + text.count("\n", 0, max(text.find("${" + ref), 0))
            ns, _, rest = ref.partition(".")
            if ns not in known:
                allowed = ", ".join(f"{k}." for k in known)
                self.p.add(where.file, line, f"${{{ref}}} cannot be used here; "
                           f"available: {allowed}")
                continue
            names = known[ns]
            head = rest.split(".", 1)[0]
            if names is not None and head not in names:
                self.p.add(where.file, line, f"${{{ref}}}: '{head}' is not defined"
                           + did_you_mean(head, list(names)))


def arg_names(spec: ArgSpec) -> tuple[str, ...]:
    return tuple(p.name for p in spec.positionals) + tuple(f.name for f in spec.flags)
