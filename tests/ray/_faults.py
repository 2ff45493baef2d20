"""A ``FileOps`` double that SIGKILLs the process writing a chosen kind of file, once.

Ray sends it to the build's write tasks with the datasink, so it kills whichever process writes
first: a write task (``_segments/``: after the file is written, so a complete orphan remains) or
the driver (``_versions/``: before the manifest is written, so the commit never happens). A
marker file makes it fire once across processes: retried tasks and reruns proceed normally.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_vq.storage.fs import FileOps

if TYPE_CHECKING:
    from collections.abc import Iterable


class KillOnce(FileOps):
    def __init__(self, folder: str, marker: str, *, after_write: bool) -> None:
        self.folder = folder  # "_segments" or "_versions"
        self.marker = marker
        self.after_write = after_write

    def write_new(self, path: Path, chunks: Iterable[bytes | memoryview]) -> None:
        hit = path.parent.name == self.folder and not Path(self.marker).exists()
        if hit and not self.after_write:
            self._die()
        super().write_new(path, chunks)
        if hit:
            self._die()

    def _die(self) -> None:
        Path(self.marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
