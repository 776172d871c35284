"""The front door routes methods to their owning actor, concurrently, and carries the caller's identity."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq

from stationd.actors.base import checkpoint
from stationd.actors.specs import ActorSpec
from stationd.daemon.frontdoor import FrontDoor
from stationd.daemon.mailbox import Mailbox
from stationd.daemon.security import CurveServer, Identity
from stationd.daemon.status import StatusBoard
from stationd.protocol.client import AsyncClient, CurveKeys
from stationd.protocol.methods import METHODS, Method, method_table
from tests.support.actors import Block, Echo, Echoed
from tests.support.daemon import free_port
from tests.support.harness import Harness

TEST_METHODS = method_table(
    [
        *METHODS.values(),
        Method("probe_echo", Echo, "probe", Echoed, "Echo through the probe actor."),
        Method("probe_block", Block, "probe", Echoed, "Never answered."),
    ]
)


def make_front_door(harness: Harness, curve: CurveServer | None = None) -> tuple[FrontDoor, str]:
    """A started front door (serving, its actors not declared up yet) and its address."""
    mailbox = Mailbox(harness.zctx, harness.settings.inproc_addr, "front_door", on_request=lambda _r: None)
    mailbox.start()
    harness.runtime.register_mailbox(mailbox)
    addr = f"tcp://127.0.0.1:{free_port()}"
    front = FrontDoor(
        harness.zctx,
        addr,
        methods=TEST_METHODS,
        board=StatusBoard(harness.publisher, publish_period=0),
        config_view={},
        mailbox=mailbox,
        max_request_bytes=1 << 20,
        request_timeout=0.5,
        curve=curve,
        log=None,
    )
    front.start()
    return front, addr


async def open_front_door(harness: Harness, curve: CurveServer | None = None) -> tuple[FrontDoor, str]:
    front, addr = make_front_door(harness, curve)
    front.open()
    return front, addr


@pytest.fixture
async def front(harness: Harness) -> AsyncIterator[str]:
    await harness.start_tree(
        ActorSpec(name="probe", actor="tests.support.actors:Probe", shutdown_timeout=0.5)
    )
    door, addr = await open_front_door(harness)
    yield addr
    await door.close()


async def test_a_method_is_answered_by_its_owning_actor(front: str) -> None:
    async with AsyncClient(front, timeout=2, zctx=zmq.asyncio.Context.instance()) as client:
        reply = await client.request("probe_echo", {"text": "routed"})
    assert reply["success"] is True and reply["text"] == "routed" and reply["actor"] == "probe"


async def test_a_slow_method_does_not_block_other_requests(front: str) -> None:
    async with AsyncClient(front, timeout=3) as client:
        blocked = asyncio.ensure_future(client.request_raw("probe_block", {}))
        statuses = await asyncio.gather(*[client.request("status") for _ in range(20)])
        assert not blocked.done()
        assert all(s["daemon_state"] == "starting" for s in statuses)  # this bare board never went "running"
        reply = await blocked
    assert reply == {
        "success": False,
        "msg": "probe did not answer 'probe_block' within 0.5 s",
        "error_code": "timeout",
    }


async def test_requests_for_actors_wait_until_the_actors_are_up(harness: Harness) -> None:
    """A client may connect the moment the daemon answers `status`, before the tree has started: its other
    requests wait for `open` and are forwarded in the order they came, instead of meeting no actor."""
    door, addr = make_front_door(harness)
    client = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(addr)
    try:
        for i in range(3):
            await client.send_multipart(
                [b"", json.dumps({"method": "probe_echo", "params": {"text": f"early {i}"}}).encode()]
            )
        await client.send_multipart([b"", b'{"method": "status"}'])
        # one connection is read in order: the status reply comes first, the three requests before it wait
        status = json.loads((await client.recv_multipart())[-1])
        assert status["daemon_state"] == "starting" and "manager_state" in status
        assert not await client.poll(0)
        await harness.start_tree(ActorSpec(name="probe", actor="tests.support.actors:Probe"))
        door.open()
        replies = [json.loads((await client.recv_multipart())[-1]) for _ in range(3)]
        assert [(r["success"], r["text"]) for r in replies] == [(True, f"early {i}") for i in range(3)]
    finally:
        client.close()
        await door.close()


async def test_a_request_held_while_the_actors_never_start_times_out(harness: Harness) -> None:
    door, addr = make_front_door(harness)  # request_timeout=0.5 and never opened
    try:
        async with AsyncClient(addr, timeout=3) as client:
            reply = await client.request_raw("probe_echo", {"text": "too early"})
        assert reply == {
            "success": False,
            "msg": "the daemon is still starting its actors after 0.5 s",
            "error_code": "timeout",
        }
    finally:
        await door.close()


async def test_a_method_whose_actor_stopped_gets_actor_stopped(harness: Harness, front: str) -> None:
    await harness.runtime.stop_child("probe", 1.0)
    async with AsyncClient(front, timeout=2) as client:
        reply = await client.request_raw("probe_echo", {"text": "anyone?"})
    assert reply["error_code"] == "actor_stopped" and "probe" in reply["msg"]


async def test_the_callers_identity_comes_from_its_curve_key(harness: Harness, tmp_path: Path) -> None:
    server_public, server_secret = zmq.curve_keypair()
    alice_public, alice_secret = zmq.curve_keypair()
    curve = CurveServer(server_public, server_secret, {alice_public.decode(): Identity("alice", "admin")})
    auth = await curve.start_authenticator(harness.zctx)
    await harness.start_tree(ActorSpec(name="probe", actor="tests.support.actors:Probe"))
    door, addr = await open_front_door(harness, curve)
    keys = CurveKeys(server_public.decode(), alice_public.decode(), alice_secret.decode())
    try:
        async with AsyncClient(addr, timeout=3, curve=keys) as client:
            reply = await client.request("probe_echo", {"text": "who am i"})
        assert (reply["caller"], reply["caller_group"]) == ("alice", "admin")
    finally:
        await door.close()
        auth.stop()


async def test_requests_waiting_at_a_checkpoint_are_served_while_a_step_holds_the_loop(front: str) -> None:
    """An actor's long step (e.g. a plan's end, with store transactions) calls `checkpoint` between its
    pieces: a `status` that came meanwhile is answered there, not after the step, and a forwarded request is
    queued with its actor."""
    client = zmq.Context.instance().socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(front)
    try:
        client.send_multipart([b"", b'{"method": "status"}'])
        # Hold the loop, as a long step does, until the reply is here (the client's socket gets it from the
        # I/O thread, whatever our loop does); without checkpoints it could only come after the step.
        deadline = time.monotonic() + 5
        while not client.poll(0) and time.monotonic() < deadline:
            checkpoint()
        assert client.poll(0), "the status request was not answered at a checkpoint"
        reply = json.loads(client.recv_multipart()[-1])
        assert reply["success"] is True and "manager_state" in reply
    finally:
        client.close()
