"""What every command needs, built on first use: the project, its runbook, the state."""

from __future__ import annotations

from functools import cached_property

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.runbook import Runbook
    from ojd.store import Store


class App:
    def __init__(self, project: str | None = None) -> None:
        self.project_override = project

    @cached_property
    def root(self) -> str:
        from ojd.project import find_root

        return find_root(override=self.project_override)

    @cached_property
    def store(self) -> Store:
        from ojd.store import Store

        store = Store()
        store.load()
        return store

    @cached_property
    def runbook(self) -> Runbook:
        from ojd import paths, project

        return project.load(self.root, paths.cache_dir(paths.ensure_state_dir()))

    def project_or_none(self) -> str | None:
        """The project when there is one; listings outside a project show everything."""
        import os

        from ojd.errors import OjError

        if self.project_override or os.environ.get("OJ_PROJECT"):
            return self.root  # asked for by name: not finding it is an error
        try:
            return self.root
        except OjError:
            return None
