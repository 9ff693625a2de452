"""Who owns a job: ``"<host>:<machine key>:<pid>:<random>"``, and whether that process is still alive.

A heartbeat tells any replica that an owner stopped, after ``job_stale_after`` seconds. On the owner's own
machine we can tell at once: the machine key (host name, boot id and PID namespace) says that the pid is one
of ours, so a server restarted after a crash marks its dead trainers' jobs interrupted straight away instead
of a minute later. Where we cannot tell (another machine, container or boot), only the heartbeat counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import uuid
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _machine_key(pid_namespace: str) -> str:
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return hashlib.sha1(f"{socket.gethostname()}|{boot}|{pid_namespace}".encode()).hexdigest()[:10]


def machine_key() -> str:
    """Equal for two processes exactly when their pids are comparable (same host, boot and PID namespace)."""
    namespace = ""
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")
    return _machine_key(namespace)


def new_owner() -> str:
    return f"{socket.gethostname()}:{machine_key()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str | None) -> int | None:
    """The pid of ``owner`` when it is a process of this machine that no longer runs (or is a zombie); None
    when it runs, or when this machine cannot tell (another machine, an owner id of another form)."""
    parts = (owner or "").rsplit(":", 3)
    if len(parts) != 4 or parts[1] != machine_key() or not parts[2].isdigit():
        return None
    pid = int(parts[2])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except PermissionError:
        return None  # alive, another user's
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return pid  # killed, not yet reaped by its parent
    return None
