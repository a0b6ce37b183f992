"""A SuperExec that starts ClientApp and ServerApp processes warm: ``python -m federated.warm_exec``.

Flower 1.41 runs every message a SuperNode receives in a fresh ``flwr-clientapp`` process (SuperExec's
``SubprocessExecutor``), which re-imports flwr, torch and the app each time (~3 s here, torch alone
~2.3 s). With the SuperNode in ``--isolation process`` mode it starts no SuperExec of its own and waits
for one to connect to its Runtime API; this module is that SuperExec. It runs Flower's own SuperExec
loop (``flwr.supercore.superexec.run_superexec``: AcquireTask with a token, then launch), but launches
ClientApp tasks by forking from a ``multiprocessing`` forkserver that has already imported torch, flwr
and ``federated.clientapp``. Each task still gets its own process (isolation and the Runtime API token
flow are unchanged); only the imports are paid once. Task polling uses
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (Flower's knob; default 1 s).

It is also the SuperLink's SuperExec (SuperLink in ``--isolation process``): ServerApp tasks are forked
the same way and run Flower's own ``run_serverapp`` (log capture for ``flwr log`` included).

Security, and why this matters beyond speed: Flower's ``SubprocessExecutor`` starts
``flwr-clientapp``/``flwr-serverapp --token TOKEN`` -- the task token, which authenticates an app
process to the Runtime API for its run, on a command line any local user can read in
``/proc/PID/cmdline``. Forked tasks get the token as a function argument; it is never on an argv.
Other task types (none in our deployment) would still go to Flower's subprocess executor.
The Runtime API is verified with ``--root-certificates`` (TLS; ``--insecure`` only if asked), and
``--superexec-auth-secret-file`` signs ``AcquireTask`` so that only this process can take tasks
(Flower 1.41 honours that secret only in ``--isolation process``).

    python -m federated.warm_exec --runtime-api-address 127.0.0.1:9094 --root-certificates ca.crt \\
        --superexec-auth-secret-file superexec.secret --preload torch --preload federated.clientapp
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence

DEFAULT_PRELOAD = (
    "torch",
    "torch._dynamo",  # torch.optim imports it lazily on the first optimizer: ~4 s per task otherwise
    "numpy",
    "flwr.supernode.runtime.run_clientapp",
    "federated.clientapp",
)


def _noop() -> None:
    return None


def _trace(event: str, **extra: object) -> None:
    path = os.environ.get("TL_FL_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"phase": event, "pid": os.getpid(), "t0": time.time(), **extra}) + "\n")


def _run_task(runtime_api_address: str, token: str, insecure: bool, root_certificates_path: str | None) -> None:
    _trace("task-process-start")
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    run_clientapp(
        runtime_api_address=runtime_api_address,
        token=token,
        insecure=insecure,
        certificates=validate_and_resolve_root_certificates(root_certificates_path, insecure),
        parent_pid=None,
        runtime_dependency_install=False,
    )


def _run_server_task(runtime_api_address: str, token: str, insecure: bool, root_certificates_path: str | None) -> None:
    """What ``flwr-serverapp`` does (``flwr.superlink.cli.flwr_serverapp``), with the token passed in."""
    from queue import Queue

    from flwr.supercore.logger import mirror_output_to_queue, restore_output
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.superlink.runtime import run_serverapp

    _trace("server-task-process-start")
    log_queue: Queue[str | None] = Queue()
    mirror_output_to_queue(log_queue)  # what the ServerApp prints reaches `flwr log`
    run_serverapp(
        runtime_api_address=runtime_api_address,
        log_queue=log_queue,
        token=token,
        insecure=insecure,
        certificates=validate_and_resolve_root_certificates(root_certificates_path, insecure),
        parent_pid=None,
        runtime_dependency_install=False,
    )
    restore_output()


class ForkServerExecutor:
    """Implements Flower's SuperExec ``Executor`` protocol with a preloaded forkserver."""

    def __init__(self, preload: Sequence[str]) -> None:
        from flwr.supercore.superexec.executor import SubprocessExecutor

        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload))
        self._fallback = SubprocessExecutor()
        self._procs: list[mp.process.BaseProcess] = []
        warm = self._ctx.Process(target=_noop)  # start the forkserver now, so the first task is warm too
        warm.start()
        warm.join()

    def get_eligible_capacity(self, supported_task_types, *, insecure=False, root_certificates_path=None):  # noqa: ANN001,ANN201
        return supported_task_types, set()

    def wait_for_capacity(self, task_type=None, *, fab_hash=None, insecure=False, root_certificates_path=None) -> None:  # noqa: ANN001
        return None

    def launch(self, spec):  # noqa: ANN001,ANN201
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor import LaunchResult

        targets = {TaskType.CLIENT_APP: _run_task, TaskType.SERVER_APP: _run_server_task}
        if spec.task_type not in targets:
            return self._fallback.launch(spec)
        proc = self._ctx.Process(
            target=targets[spec.task_type],
            args=(spec.runtime_api_address, spec.token, spec.insecure, spec.root_certificates_path),
            name=f"{spec.task_type}-task-{spec.task_id}",
        )
        _trace("task-launch", task_id=spec.task_id)
        proc.start()
        self._procs.append(proc)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        alive = []
        for p in self._procs:
            if p.is_alive():
                alive.append(p)
            else:
                p.join(0)
        self._procs = alive

    def close(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(5)
        self._procs = []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m federated.warm_exec", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (host:port)")
    tls = ap.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="the Runtime API is plain HTTP (not used by deployment.py)")
    tls.add_argument("--root-certificates", help="CA that signed the Runtime API's TLS certificate")
    ap.add_argument("--superexec-auth-secret-file", help="shared secret the Runtime API requires for AcquireTask")
    ap.add_argument("--preload", action="append", help=f"module to import once (default: {', '.join(DEFAULT_PRELOAD)})")
    args = ap.parse_args(argv)
    if not args.insecure and not args.root_certificates:
        ap.error("give --root-certificates (the Runtime API's CA), or --insecure for a plain-HTTP Runtime API")

    from flwr.supercore.auth.superexec_secret import load_superexec_auth_secret
    from flwr.supercore.superexec import run_superexec as superexec_module

    secret = load_superexec_auth_secret(args.superexec_auth_secret_file)

    executor = ForkServerExecutor(args.preload or DEFAULT_PRELOAD)
    # Flower's loop picks its executor with get_executor(); ours is the only change.
    superexec_module.get_executor = lambda *a, **k: executor  # type: ignore[assignment]
    superexec_module.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=bool(args.insecure),
        root_certificates_path=args.root_certificates,
        superexec_auth_secret=secret,
        parent_pid=None,
        runtime_dependency_install=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
