"""One run per workdir: an advisory lock (`fcntl.flock`) held for the whole run.

A second run on the same workdir would interleave checkpoints and metric records; it fails at
once instead, naming the process that holds the lock. The lock goes with its process, so a
killed run leaves nothing to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

LOCK_FILE = ".lock"


class WorkdirInUse(RuntimeError):
  """Another process is training in this workdir."""


@contextlib.contextmanager
def exclusive(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock while the block runs; WorkdirInUse when another process holds it."""
  os.makedirs(workdir, exist_ok=True)
  handle = open(os.path.join(workdir, LOCK_FILE), "a+")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    owner = handle.read().strip() or "another process"
    handle.close()
    raise WorkdirInUse(
      f"{os.path.abspath(workdir)} is in use by another run ({owner}); wait "
      "for it to end or choose another --workdir."
    ) from None
  handle.seek(0)
  handle.truncate()
  handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
  handle.flush()
  try:
    yield
  finally:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()
