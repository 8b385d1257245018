"""A small tmpfs mount for disk-full tests, and filler files that use up its space."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

_CHUNK = 1 << 20


@contextlib.contextmanager
def mounted_tmpfs(directory: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` on `directory` for the block; skip the test when mounting is impossible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (uid 0); run the disk-full tests as root")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {directory}: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield directory
    finally:
        # A file still open (a process not reaped yet) makes a plain umount fail with EBUSY.
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding `directory`."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> int:
    """Append to the file `path` until at most `leave` bytes are free on its file system; bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (room := free_bytes(path.parent) - leave) > 0:
            try:
                written += os.write(fd, b"\0" * min(room, _CHUNK))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return written


def integrity(database: Path) -> str:
    """`PRAGMA integrity_check` of a SQLite file that no process has open ("ok" when sound)."""
    conn = sqlite3.connect(database)
    try:
        return "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check").fetchall())
    finally:
        conn.close()
