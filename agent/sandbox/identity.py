"""Identity: what the job's PID 1 keeps, and when (init.c applies it; these are the numbers).

The order matters, and init.c keeps it: the bounding set can only be dropped while CAP_SETPCAP is
held, so it goes first; then groups, gid and uid; then the remaining sets are cleared explicitly;
no_new_privs last, so that no setuid or file-capability binary can give any of it back.
"""

from __future__ import annotations

CAP_SETGID, CAP_SETUID, CAP_KILL, CAP_SETPCAP = 6, 7, 5, 8
#: what the init still holds when it forks the job: the reaper's CAP_KILL, and what the job's own
#: process needs to become the job user (drop the bounding set, set groups, gid and uid); it is
#: not dumpable and has no_new_privs by then
FORK_CAPS = frozenset({CAP_KILL, CAP_SETPCAP, CAP_SETGID, CAP_SETUID})
#: what the init keeps once the job's process exists: it stays root's uid (the job cannot signal
#: or trace it) with only the capability it needs to forward signals to the job's processes
REAPER_CAPS = frozenset({CAP_KILL})
