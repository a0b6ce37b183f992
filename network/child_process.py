"""Child processes that die with the process that started them (Linux ``PR_SET_PDEATHSIG``).

Shared by the supervisor (``network.processes.supervisor``) and the twins launcher (``twins.procs``). It lives in
``network/`` because that is the one package every other package (orchestrator, twins, federated, peers)
already imports and which imports none of them; ``twins`` may not import ``orchestrator``.

Use as ``subprocess.Popen(argv, preexec_fn=die_with_parent())``. Caveat of the kernel feature: the signal
follows the *thread* that forked, so start such children from a thread that lives as long as they should.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """The ``preexec_fn`` for a child that gets ``sig`` when this process dies and has a process group of its
    own (so a Ctrl-C at the terminal reaches only the parent, which then stops its children in order)."""
    parent = os.getpid()  # taken before the fork: the child compares against it below

    def preexec() -> None:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        except OSError:
            pass
        # The parent may have died between fork and prctl; then no signal will ever come, so send it now.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)
        os.setpgrp()

    return preexec
