"""doit's dependency database for a promotion: JSON, written atomically, read leniently.

doit's default `dbm` backend is whatever the Python was built with. With `dbm.ndbm` (Debian's and
Ubuntu's Python) the pages it writes can carry leftover process memory: a `.doit.db.db` written after
`doit import` held the plaintext secrets bundle the process had read. A file outside rendered/ must
never hold a secret, so the database is doit's own JSON format instead, which holds exactly the values
the tasks returned (digests and report lines, redacted).

Beyond doit's ``JsonDB``: the file is replaced atomically (a run killed while saving leaves the previous
database, not half a JSON document), a database that does not parse (a killed run of an older version, a
`dbm` file of the same name) is started afresh instead of stopping every command with a traceback, and a
checkout that cannot be written (a read-only mount) is not written. None of this loses anything: the
database only remembers digests for speed; what is promoted is the ledger's to say.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from doit.dependency import DatabaseException, JsonDB

from pipeline.state import ledger

_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class PromotionDB(JsonDB):
    """doit's JSON database, replaced atomically and started afresh when unreadable."""

    desc = "JSON, written atomically (talos-promote)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        self.name = name
        self.codec = codec
        self._db: dict[str, Any] = {}
        if os.path.exists(name):
            try:
                self._db = self._load()
            except (DatabaseException, OSError, UnicodeDecodeError):
                self._db = {}  # remembered digests only: the next run checks every task again

    def dump(self) -> None:
        """Save the database: a temporary file, fsync, rename (a read-only checkout keeps its file)."""
        data = self.codec.encode(self._db).encode("utf-8")
        try:
            ledger.atomic_write(Path(self.name), data, 0o600)
        except OSError as error:
            if error.errno not in _NOT_WRITABLE:
                raise
