"""Content-addressed document store under <instance>/documents/.

Path = documents/<sha[0:2]>/<sha[2:4]>/<sha256>. The name is the SHA-256 the server computed
over the bytes it received, so no client-supplied string ever reaches the filesystem (no path
traversal by construction), identical uploads share one file, and a file's integrity can be
re-checked at any time. Files are 0600 and directories 0700: only the server account reads them.

Writes are atomic: bytes go to a temporary file in the same directory, are fsynced, then
os.replace()d into place, so a crash never leaves a half-written document under its hash.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

from ipad_mdm.files import TooLarge as FileTooLarge
from ipad_mdm.files import private_dir, spool

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"document larger than {limit} bytes")
        self.limit = limit


class DocumentStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _ensure(self, path: Path) -> None:
        private_dir(path)

    def path_for(self, sha256: str) -> Path:
        # Defence in depth: the argument always comes from our database, but refuse anything
        # that is not a bare hex digest anyway.
        if not _SHA256.match(sha256 or ""):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def spool(self, stream: BinaryIO, limit: int) -> tuple[Path, str, int]:
        """Copy an upload into a private temporary file, hashing as it goes.
        Returns (temp path, sha256, size); the caller inspects it, then commit() or discard()."""
        try:
            return spool(stream, self.root / "tmp", limit, chunk=CHUNK)
        except FileTooLarge:
            raise TooLarge(limit) from None

    def commit(self, tmp: Path, sha256: str) -> Path:
        final = self.path_for(sha256)
        self._ensure(final.parent)
        if final.exists():
            tmp.unlink(missing_ok=True)  # same bytes already stored
            return final
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        return final

    @staticmethod
    def discard(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)
