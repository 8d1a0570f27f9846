"""Named failure points for fault-injection tests (off unless ``INGEST_FAILPOINTS`` is set).

``INGEST_FAILPOINTS="before_commit=sleep(30);after_commit=raise"`` makes the runner sleep at
``before_commit`` (so a test can SIGKILL it there, or let another writer win the commit race)
and raise at ``after_commit`` (a commit that landed but whose caller saw an error). Every point
reached is announced on stderr as ``failpoint <name> reached`` so a test knows where the process
is. Production never sets the variable; the cost of an unset failpoint is one dict lookup.
"""

from __future__ import annotations

import os
import re
import sys
import time

_SPEC = re.compile(r"^(?P<name>[a-z_]+)=(?P<action>sleep\((?P<secs>[0-9.]+)\)|raise)$")


class InjectedFault(RuntimeError):
    """Raised by a ``raise`` failpoint."""


def _parse(text: str) -> dict[str, str]:
    points = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        match = _SPEC.match(part)
        if not match:
            raise ValueError(f"INGEST_FAILPOINTS: cannot parse {part!r} (want name=sleep(N) or name=raise)")
        points[match["name"]] = match["action"]
    return points


def failpoint(name: str) -> None:
    spec = os.environ.get("INGEST_FAILPOINTS")
    if not spec:
        return
    action = _parse(spec).get(name)
    if action is None:
        return
    print(f"failpoint {name} reached", file=sys.stderr, flush=True)
    if action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    time.sleep(float(action[len("sleep(") : -1]))
