"""`python -m chaincode.server` as a process of its own: what the server does before and without a peer.

A bad configuration or a taken port is one clear line and exit 2; SIGTERM stops it cleanly, also while a
client holds a chaincode stream open. How real peers drive it (registration with its package ID,
transactions, private data and its hashes, key-level policies, key history, events, 100 transactions in
flight) is tested on the session's Fabric network: tests/integration/test_fabric_semantics.py,
test_gateway_client.py, test_data_cli.py and test_network_identities.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from fabric_protos.peer import chaincode_shim_pb2, chaincode_shim_pb2_grpc

from tests.fabric_net import REPO

pytestmark = pytest.mark.integration

CHAINCODE_ID = "twinledger_test:" + "0" * 64
STARTED_RE = re.compile(r"chaincode server started id=(\S+) address=(\S+):(\d+) tls=(\S+)")


def server_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
            "CHAINCODE_ID": CHAINCODE_ID, "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0", **extra}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CHAINCODE_ID": ""}, "CHAINCODE_ID is not set"),
        ({"CHAINCODE_SERVER_ADDRESS": "127.0.0.1"}, "is not host:port"),
        ({"CHAINCODE_TLS_KEY_FILE": "/nonexistent/key.pem", "CHAINCODE_TLS_CERT_FILE": "/nonexistent/cert.pem"},
         "CHAINCODE_TLS_KEY_FILE='/nonexistent/key.pem' cannot be read"),
    ],
)
def test_bad_config_is_one_clear_line(env: dict[str, str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "chaincode.server"], cwd=REPO, capture_output=True, text=True,
                            timeout=60, env=server_env(**env))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-m", "chaincode.server"], cwd=REPO, capture_output=True,
                                text=True, timeout=60, env=server_env(CHAINCODE_SERVER_ADDRESS=address))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "chaincode server:" in line]
    assert len(errors) == 1 and f"cannot listen on {address}" in errors[0] and "Traceback" not in result.stderr


def test_sigterm_stops_the_server_cleanly_with_a_stream_open(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "chaincode.server"], cwd=REPO, env=server_env(),
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (match := STARTED_RE.search(log.read_text())) and process.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert match, log.read_text()
        assert (match.group(1), match.group(4)) == (CHAINCODE_ID, "off")

        async def connect_then_signal() -> chaincode_shim_pb2.ChaincodeMessage:
            # What a peer does first: open the chaincode stream; the server introduces itself (REGISTER).
            async with grpc.aio.insecure_channel(f"127.0.0.1:{match.group(3)}") as channel:
                call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
                first = await asyncio.wait_for(call.read(), 10)
                process.send_signal(signal.SIGTERM)
                await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)
                return first

        first = asyncio.run(connect_then_signal())
        assert first.type == chaincode_shim_pb2.ChaincodeMessage.REGISTER
        assert CHAINCODE_ID.encode() in first.payload
        assert process.returncode == 0
        text = log.read_text()
        assert "chaincode server stopped" in text and "reason=SIGTERM" in text
        # (When the 2 s grace ends with the stream still open, grpc logs the handler's CancelledError with
        # a traceback; the real network's chaincode logs show the same at every `down`.)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
