"""Files the server writes: private (0600 files in 0700 folders) and atomic.

Everything under the instance folder may hold or reveal secrets (keys, documents, reports
with device lists), so nothing there is readable by other users of the machine. A file is
written to a temporary name in the same folder, fsynced and renamed: a reader sees the old
file or the new one, never half of one, and a failed write (disk full, read-only folder)
leaves no partial file behind.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700; tighten it if it already exists."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):  # Path.mkdir(parents=True) would give the parents 0755
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
        os.chmod(folder, PRIVATE_DIR_MODE)
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, PRIVATE_DIR_MODE)
    except PermissionError:  # a folder owned by root (e.g. /etc/wireguard): leave it as it is
        pass
    return path


def write_atomic(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE, *, private_parent: bool = True) -> None:
    path = Path(path)
    if private_parent:
        private_dir(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def tighten_tree(root: Path, *, max_entries: int = 10000) -> None:
    """Bring an existing folder tree to 0700/0600 (an instance made by an older version).
    Bounded: a documents store of millions of files is tightened as it is written instead."""
    root = Path(root)
    if not root.exists():
        return
    private_dir(root)
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath) / name
            if not p.is_symlink() and p.stat().st_mode & 0o077:
                os.chmod(p, PRIVATE_DIR_MODE)
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink() and p.stat().st_mode & 0o077:
                os.chmod(p, PRIVATE_FILE_MODE)
        seen += len(dirnames) + len(filenames)
        if seen > max_entries:
            return


class TooLarge(ValueError):
    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than {limit} bytes")
        self.limit = limit


def spool(stream, folder: Path, limit: int, *, chunk: int = 1024 * 1024) -> tuple[Path, str, int]:
    """Copy a stream into a private temporary file in `folder`, hashing as it goes, never holding
    more than one chunk in memory. Returns (path, sha256, size); TooLarge past `limit` (nothing left)."""
    import hashlib
    import tempfile

    private_dir(folder)
    fd, name = tempfile.mkstemp(dir=folder, prefix="upload-")  # mkstemp creates it 0600
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                data = stream.read(chunk)
                if not data:
                    break
                size += len(data)
                if size > limit:
                    raise TooLarge(limit)
                digest.update(data)
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), digest.hexdigest(), size
