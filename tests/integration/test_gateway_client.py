"""The Python Fabric Gateway client (network/gateway*.py) against the real peers of the session network.

Every call goes to a real Fabric v3.1.5 peer's Gateway service over TLS, as an identity its org's Fabric
CA enrolled, and runs the real chaincode: evaluate, submit, the step-by-step flow, many submissions in
flight, the errors a caller meets (commit and endorsement failures with the peers' own details, a
channel or chaincode the peer does not know, deadlines, TLS mistakes), the blocking wrapper, and
chaincode events. Checkpointed event resumption across reconnects and what the MSPs refuse are in
test_fabric_semantics.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Coroutine
from typing import Any

import grpc
import pytest

from network.gateway import ChaincodeEvent, Deadlines, Gateway
from network.gateway_errors import CommitError, EndorseError, EvaluateError, GatewayError
from network.gateway_sync import SyncGateway
from network.identity import load_msp_identity
from tests.fabric_net import FabricNet
from tests.integration.fabric_nodes import stranger, wait_peers_caught_up

pytestmark = pytest.mark.integration

DIGEST = "e" * 64


def run(coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def endpoint(net: FabricNet, org: str) -> str:
    return f"127.0.0.1:{net.peer(org).ports.listen}"


def dial(net: FabricNet, org: str, user: str, **kwargs: Any) -> Gateway:
    """Gateway.connect by hand (what orchestrator.connect does), so that each TLS parameter can be varied."""
    identity, signer = load_msp_identity(net.layout.user_msp(org, user), net.spec.org(org).msp_id)
    tls = net.layout.user_tls(org, user)
    params: dict[str, Any] = {"identity": identity, "signer": signer, "tls_root_cert_pem": net.layout.ca_cert(org),
                              "client_cert_pem": tls / "client.crt", "client_key_pem": tls / "client.key",
                              "peer_names": {endpoint(net, org): net.peer(org).name}}
    params.update(kwargs)
    return Gateway.connect(endpoint(net, org), **params)


def test_evaluate_as_the_enrolled_identity(fabric_net: FabricNet) -> None:
    net, pseudonym = fabric_net, fabric_net.unique("pt-eval")

    async def body() -> None:
        async with net.connect("hospital1", "steward") as gateway:
            network = gateway.network(net.spec.channel)
            me = json.loads(await network.contract(net.chaincode).evaluate("WhoAmI"))
            assert (me["msp_id"], me["role"], me["org_kind"]) == ("Hospital1MSP", "steward", "hospital")
            # A named contract ("data:ListDatasets" on the wire) and the default one (registry).
            assert isinstance(json.loads(await network.contract(net.chaincode, "data").evaluate("ListDatasets")), list)
            assert {o["name"] for o in json.loads(await network.contract(net.chaincode).evaluate("ListOrgs"))} == {
                o.name for o in net.spec.member_orgs}
            # The transient map reaches the chaincode; an evaluation commits nothing.
            consent = network.contract(net.chaincode, "consent")
            record = json.dumps({"pseudonym": pseudonym, "salt": "ab" * 16, "scope": "train:cardiac-v1",
                                 "status": "given"}).encode()
            simulated = json.loads(await consent.evaluate("RecordConsent", transient={"consent": record},
                                                          endorsing_orgs=["Hospital1MSP"]))
            assert simulated["collection"] == "_implicit_org_Hospital1MSP" and len(simulated["sha256"]) == 64
            with pytest.raises(EvaluateError, match="has no consent recorded"):
                await consent.evaluate("ReadConsent", pseudonym, "train:cardiac-v1")

    run(body())


def test_submit_end_to_end(fabric_net: FabricNet) -> None:
    net, ds, pinned = fabric_net, fabric_net.unique("submit"), fabric_net.unique("pinned")

    async def body() -> None:
        async with net.connect("plant1", "steward") as gateway:
            data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            written = json.loads(await data.submit("RegisterDataset", ds, "tabular", "{}", DIGEST, "internal"))
            assert (written["id"], written["owner"]) == (ds, "plant1")
            assert json.loads(await data.evaluate("ReadDataset", ds)) == written
            # Endorsers chosen by the caller: a majority of the orgs (the chaincode's policy) with the owner.
            orgs = ["Plant1MSP", "Plant2MSP", "Hospital1MSP"]
            assert json.loads(await data.submit("RegisterDataset", pinned, "t", "{}", DIGEST, "internal",
                                                endorsing_orgs=orgs))["id"] == pinned

    run(body())


def test_step_by_step(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("steps")

    async def body() -> None:
        async with net.connect("plant2", "steward") as gateway:
            data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            proposal = data.new_proposal("RegisterDataset", ds, "t", "{}", DIGEST, "internal")
            transaction = await proposal.endorse()
            assert transaction.transaction_id == proposal.transaction_id
            assert json.loads(transaction.result)["tx_id"] == proposal.transaction_id
            # Endorsed, not ordered: nothing is on the ledger yet.
            with pytest.raises(EvaluateError, match="is not registered"):
                await data.evaluate("ReadDataset", ds)
            commit = await transaction.submit()
            status = await commit.status()
            assert (status.successful, status.code_name, status.transaction_id) == (
                True, "VALID", proposal.transaction_id)
            assert status.block_number > 0
            assert json.loads(await data.evaluate("ReadDataset", ds))["tx_id"] == status.transaction_id

    run(body())


def test_100_concurrent_submissions(fabric_net: FabricNet) -> None:
    net = fabric_net
    ids = [net.unique("bulk") for _ in range(100)]

    async def body() -> tuple[float, set[int]]:
        async with net.connect("hospital2", "steward") as gateway:
            data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            started = time.monotonic()
            commits = await asyncio.gather(*(
                data.submit_async("RegisterDataset", ds, "t", "{}", DIGEST, "internal") for ds in ids))
            statuses = await asyncio.gather(*(c.status() for c in commits))
            elapsed = time.monotonic() - started
            assert [s.code_name for s in statuses] == ["VALID"] * len(ids)
            assert [json.loads(c.result)["id"] for c in commits] == ids
            listed = {d["id"] for d in json.loads(await data.evaluate("ListDatasets"))}
            assert set(ids) <= listed
            return elapsed, {s.block_number for s in statuses}

    elapsed, blocks = run(body())
    print(f"100 concurrent submissions: {elapsed:.1f} s, {len(blocks)} blocks")
    # In flight together, they shared blocks; the bound only catches a client that serialises them.
    assert len(blocks) < len(ids) and elapsed < 60


def test_commit_error_names_the_validation_code(fabric_net: FabricNet) -> None:
    net, ds = fabric_net, fabric_net.unique("commit-error")

    async def body() -> None:
        async with net.connect("plant1", "steward") as gateway:
            data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            await data.submit("RegisterDataset", ds, "t", "{}", DIGEST, "internal")
            await data.submit("Grant", ds, "plant2", "train:a", "")
            wait_peers_caught_up(net, "peer0.plant1")  # else a pinned peer may not know the grant yet
            # Endorsed by a majority that leaves out the owner's peer: the grant key's policy fails.
            with pytest.raises(CommitError) as caught:
                await data.submit("Revoke", ds, "plant2", "train:a",
                                  endorsing_orgs=["Hospital1MSP", "Hospital2MSP", "Plant2MSP"])
            error = caught.value
            assert error.validation_name == "ENDORSEMENT_POLICY_FAILURE" and error.block_number > 0
            assert str(error) == (f"commit failed: transaction {error.transaction_id} is invalid in block "
                                  f"{error.block_number}: ENDORSEMENT_POLICY_FAILURE ({error.validation_code})")

    run(body())


def test_a_resubmitted_transaction_is_refused_as_a_duplicate(fabric_net: FabricNet) -> None:
    """The same nonce gives the same transaction id: a client that kept it can resubmit safely."""
    net, ds = fabric_net, fabric_net.unique("dup")
    nonce = os.urandom(24)

    async def body() -> None:
        async with net.connect("plant1", "steward") as gateway:
            data = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            first = data.new_proposal("RegisterDataset", ds, "t", "{}", DIGEST, "internal", nonce=nonce)
            assert (await (await (await first.endorse()).submit()).status()).successful
            again = data.new_proposal("RegisterDataset", ds, "t", "{}", DIGEST, "internal", nonce=nonce)
            assert again.transaction_id == first.transaction_id
            with pytest.raises(EndorseError) as caught:
                await again.endorse()
            assert caught.value.code == grpc.StatusCode.ABORTED
            assert f"duplicate transaction found [{first.transaction_id}]" in str(caught.value)

    run(body())


def test_endorse_and_evaluate_errors_carry_the_peers_details(fabric_net: FabricNet) -> None:
    net = fabric_net
    where = f"peer0.plant1 (Plant1MSP @{endpoint(net, 'plant1')})"

    async def body() -> None:
        async with net.connect("plant1", "steward") as gateway:
            registry = gateway.network(net.spec.channel).contract(net.chaincode)
            with pytest.raises(EndorseError) as endorse:
                await registry.submit("RegisterOrg", "plant1", "plant")
            assert endorse.value.code == grpc.StatusCode.ABORTED
            assert str(endorse.value) == (f"endorse failed: {where}: chaincode response 500, access denied: "
                                          "RegisterOrg needs role 'admin' in the caller's certificate, found 'steward'")
            with pytest.raises(EvaluateError) as evaluate:
                await registry.evaluate("NoSuchFunction")
            assert evaluate.value.code == grpc.StatusCode.UNKNOWN
            assert str(evaluate.value) == (f"evaluate failed: {where}: chaincode response 500, "
                                           "Function NoSuchFunction not found in contract registry")
            # What the peer itself does not know: the gateway answers, so the peer is not "unreachable".
            with pytest.raises(EvaluateError) as channel:
                await gateway.network("elsewhere").contract(net.chaincode).evaluate("WhoAmI")
            assert channel.value.code == grpc.StatusCode.UNAVAILABLE and not channel.value.unreachable
            assert "failed to get config for channel [elsewhere]" in str(channel.value)
            assert "cannot reach" not in str(channel.value)
            with pytest.raises(EvaluateError) as chaincode:
                await gateway.network(net.spec.channel).contract("nosuchcc").evaluate("WhoAmI")
            assert chaincode.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "no peers available to evaluate chaincode nosuchcc" in str(chaincode.value)

    run(body())


def test_sync_wrapper_from_a_script_and_inside_asyncio(fabric_net: FabricNet) -> None:
    net = fabric_net
    first, second = net.unique("sync"), net.unique("sync")
    with net.connect_sync("hospital1", "steward") as gateway:
        network = gateway.network(net.spec.channel)
        data = network.contract(net.chaincode, "data")
        assert json.loads(data.submit("RegisterDataset", first, "t", "{}", DIGEST, "internal"))["id"] == first
        assert json.loads(data.evaluate("ReadDataset", first))["owner"] == "hospital1"
        commit = data.submit_async("RegisterDataset", second, "t", "{}", DIGEST, "internal")
        status = commit.status()
        assert status.successful and json.loads(commit.result)["tx_id"] == commit.transaction_id
        # The step-by-step flow, blocking.
        transaction = data.new_proposal("Grant", second, "plant1", "train:a", "").endorse()
        assert transaction.submit().status().successful

        events = network.chaincode_events(net.chaincode, start_block=status.block_number)
        event = next(events)
        assert (event.event_name, event.transaction_id) == ("DatasetRegistered", commit.transaction_id)
        # close() from another thread ends an iteration blocked waiting for the next event.
        rest: list[ChaincodeEvent] = []
        reader = threading.Thread(target=lambda: rest.extend(e for e in events if e.block_number > 10**9))
        reader.start()
        time.sleep(0.5)
        events.close()
        reader.join(timeout=10)
        assert not reader.is_alive() and rest == []

    async def inside_another_loop() -> bytes:
        # Blocking calls from a coroutine (a Flower or asyncua callback) work: the wrapper runs its
        # calls on its own loop thread.
        with net.connect_sync("plant2", "client") as inner:
            return inner.network(net.spec.channel).contract(net.chaincode, "data").evaluate("ReadDataset", first)

    assert json.loads(asyncio.run(inside_another_loop()))["id"] == first


def test_events_start_at_the_next_block_unless_a_start_block_is_given(fabric_net: FabricNet) -> None:
    net = fabric_net
    before, after = net.unique("before"), net.unique("after")

    async def body() -> None:
        async with net.connect("plant2", "steward") as gateway:
            network = gateway.network(net.spec.channel)
            data = network.contract(net.chaincode, "data")
            early = await (await data.submit_async("RegisterDataset", before, "t", "{}", DIGEST, "internal")).status()
            async with network.chaincode_events(net.chaincode) as stream:
                # The stream's start (the next block) is fixed when the peer accepts the request: the
                # first read sends it, so read concurrently and submit a moment later.
                first = asyncio.ensure_future(stream.__anext__())
                await asyncio.sleep(1.0)
                late = await (await data.submit_async("RegisterDataset", after, "t", "{}", DIGEST, "internal")).status()
                event = await asyncio.wait_for(first, 15)
                assert (event.transaction_id, json.loads(event.payload)["id"]) == (late.transaction_id, after)
            # Replaying history needs an explicit start block (Fabric's gateway refuses "oldest").
            async with network.chaincode_events(net.chaincode, start_block=early.block_number) as stream:
                replayed = await asyncio.wait_for(stream.__anext__(), 15)
                assert (replayed.transaction_id, replayed.block_number) == (early.transaction_id, early.block_number)

    run(body())


# --- transport: TLS and deadlines ------------------------------------------------------------------


def test_plain_text_client_is_refused_clearly(fabric_net: FabricNet) -> None:
    net = fabric_net

    async def body() -> None:
        async with dial(net, "hospital2", "client", insecure=True) as gateway:
            with pytest.raises(GatewayError) as caught:
                await gateway.network(net.spec.channel).contract(net.chaincode).evaluate("WhoAmI", timeout=10)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.unreachable
        message = str(caught.value)
        assert message.startswith("evaluate failed: UNAVAILABLE")
        assert f"cannot reach the Fabric gateway at {endpoint(net, 'hospital2')}" in message
        assert "Fabric peers only accept TLS" in message

    run(body())


def test_untrusted_server_certificate_or_name_is_refused(fabric_net: FabricNet) -> None:
    net = fabric_net

    async def who_am_i(**kwargs: Any) -> Any:
        async with dial(net, "hospital2", "client", **kwargs) as gateway:
            return await gateway.network(net.spec.channel).contract(net.chaincode).evaluate("WhoAmI", timeout=10)

    async def body() -> None:
        for wrong in ({"tls_root_cert_pem": stranger().ca_pem},              # a CA the client does not know
                      {"tls_root_cert_pem": net.layout.ca_cert("plant1")},   # another org's CA
                      {"server_name_override": "peer0.plant2"}):             # a name not in the certificate
            with pytest.raises(EvaluateError) as caught:
                await who_am_i(**wrong)
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE, wrong
            assert "do the TLS settings match" in str(caught.value)
        # The names the peer's certificate does carry (with the user's TLS certificate, as always).
        assert json.loads(await who_am_i(server_name_override="peer0.hospital2"))["msp_id"] == "Hospital2MSP"
        assert json.loads(await who_am_i())["role"] == "client"

    run(body())


def test_tls_is_required_unless_insecure_is_explicit(fabric_net: FabricNet) -> None:
    identity, signer = load_msp_identity(fabric_net.layout.user_msp("plant1", "client"), "Plant1MSP")
    with pytest.raises(ValueError, match="tls_root_cert_pem"):
        Gateway.connect(endpoint(fabric_net, "plant1"), identity=identity, signer=signer)
    with pytest.raises(ValueError, match="both client_cert_pem and client_key_pem"):
        Gateway.connect(endpoint(fabric_net, "plant1"), identity=identity, signer=signer,
                        tls_root_cert_pem=fabric_net.layout.ca_cert("plant1"), client_cert_pem=b"x")


def test_deadline_exceeded_is_clear(fabric_net: FabricNet) -> None:
    """A chaincode server that stops answering (SIGSTOP) makes the peer slow: the client's deadline says so."""
    net = fabric_net
    server = net.processes()[f"{net.chaincode}.peer0.plant1"]["pid"]

    async def body() -> tuple[float, EvaluateError]:
        async with dial(net, "plant1", "client", deadlines=Deadlines(evaluate=1.0)) as gateway:
            registry = gateway.network(net.spec.channel).contract(net.chaincode)
            await registry.evaluate("WhoAmI")  # the peer's stream to its chaincode server is open
            os.kill(server, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(EvaluateError) as caught:
                    await registry.evaluate("WhoAmI")
                return time.monotonic() - started, caught.value
            finally:
                os.kill(server, signal.SIGCONT)

    elapsed, error = run(body())
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed < 3
    assert f"no answer from {endpoint(net, 'plant1')} within 1s" in str(error)
    # Resumed, the server answers again.
    with net.connect_sync("plant1", "client") as gateway:
        assert json.loads(gateway.network(net.spec.channel).contract(net.chaincode).evaluate("WhoAmI"))["role"] == "client"
