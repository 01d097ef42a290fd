"""What every command needs, built on first use: the project, its runbook, the state."""

from __future__ import annotations

import os
import sys
from functools import cached_property

from ojd import paths
from ojd import project as projects
from ojd.errors import OjError, escaped
from ojd.project import find_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ojd.runbook.model import Runbook
    from ojd.store import Store


class App:
    def __init__(self, project: str | None = None) -> None:
        self.project_override = project

    @cached_property
    def root(self) -> str:
        return find_root(override=self.project_override)

    @cached_property
    def store(self) -> Store:
        # lazy: oj runbook check and oj run of a command's script never open the store
        from ojd.store import Store

        store = Store()
        store.load()
        return store

    @cached_property
    def reader_store(self) -> Store | EmptyStore:
        """The store for listings. Only writers create the state dir: a missing one (nothing
        recorded yet, or a mistyped ``OJ_STATE_DIR``) lists as empty, with a note."""
        root = paths.state_dir()
        if state_exists(root):
            return self.store  # an unusable path still fails with its one-line reason
        print(f"oj: note: {missing_state_dir(root)}", file=sys.stderr)
        return EmptyStore(root)

    def existing_store(self) -> Store:
        """The store for commands that read one record (show, logs): a missing state dir is
        the error, rather than "no such id"."""
        root = paths.state_dir()
        if not state_exists(root):
            raise OjError(missing_state_dir(root))
        return self.store

    @cached_property
    def runbook(self) -> Runbook:
        # the parsed runbook is cached in the state dir, when there is one
        root = paths.state_dir()
        return projects.load(self.root, paths.cache_dir(root) if os.path.isdir(root) else None)

    def project_or_none(self) -> str | None:
        """The project when there is one; listings outside a project show everything."""
        if self.project_override or os.environ.get("OJ_PROJECT"):
            return self.root  # asked for by name: not finding it is an error
        try:
            return self.root
        except OjError:
            return None


def state_exists(root: str) -> bool:
    """Whether there is a state to read: the state dir, or a database (which the URL names;
    an unusable one fails with its own one-line reason)."""
    return os.path.lexists(root) or bool(os.environ.get("OJ_STATE_URL"))


def missing_state_dir(root: str) -> str:
    root = escaped(root)  # a path from the environment, on one line
    if os.environ.get("OJ_STATE_DIR"):
        return (f"state dir {root} (OJ_STATE_DIR) does not exist, so nothing is recorded "
                "there; check OJ_STATE_DIR")
    return (f"state dir {root} does not exist yet, so nothing is recorded; the first push, "
            "run or worker start creates it")


class EmptyStore:
    """What a reader sees of a state dir that does not exist: nothing, and nothing created."""

    def __init__(self, root: str) -> None:
        from ojd.state import State  # lazy: as in App.store

        self.root = root
        self.state = State()

    def load(self):
        return self.state

    refresh = load
