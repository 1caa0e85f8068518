"""What every benchmark's JSON records beside its figures: the commit, the date and the machine."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess


def provenance() -> dict[str, str]:
  """{"commit", "dirty", "date", "machine"}: the checkout's HEAD (and whether it has uncommitted
  changes), the UTC time, and the machine's architecture, CPU count and OS."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root).stdout.strip()

  return {
    "commit": git("rev-parse", "HEAD"),
    "dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))),
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
  }
