"""CurveZMQ: allow-listed keys are answered and identified; unknown keys and plain clients get nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from stationd.daemon.security import QSERVER_CLIENT_PUBLIC_KEY, QSERVER_CLIENT_SECRET_KEY
from stationd.protocol.client import Client, CurveKeys, Subscriber
from stationd.protocol.errors import DeadlineExceeded
from tests.support.daemon import DaemonProcess, start_daemon


@pytest.fixture
def keys() -> dict[str, tuple[str, str]]:
    pairs = {name: zmq.curve_keypair() for name in ("server", "alice", "mallory")}
    return {name: (pub.decode(), sec.decode()) for name, (pub, sec) in pairs.items()}


@pytest.fixture
def curve_daemon(tmp_path: Path, keys: dict[str, tuple[str, str]]) -> Iterator[DaemonProcess]:
    config = f"""
[security]
server_secret_key = "{keys["server"][1]}"
admit_qserver_client_key = true
qserver_user = "beamline"
qserver_user_group = "primary"

[[security.clients]]
public_key = "{keys["alice"][0]}"
user = "alice"
user_group = "test_user"
"""
    d = start_daemon(tmp_path, config=config)
    yield d
    d.stop()


def curve_for(keys: dict[str, tuple[str, str]], client: str) -> CurveKeys:
    return CurveKeys(keys["server"][0], keys[client][0], keys[client][1])


def test_an_allowed_key_is_answered(curve_daemon: DaemonProcess, keys: dict[str, tuple[str, str]]) -> None:
    with Client(curve_daemon.control_addr, timeout=5, curve=curve_for(keys, "alice")) as client:
        assert client.ping().daemon_state == "running"


def test_an_unknown_key_gets_nothing(curve_daemon: DaemonProcess, keys: dict[str, tuple[str, str]]) -> None:
    with (
        Client(curve_daemon.control_addr, timeout=1, curve=curve_for(keys, "mallory")) as client,
        pytest.raises(DeadlineExceeded),
    ):
        client.ping()


def test_a_plaintext_client_gets_nothing(curve_daemon: DaemonProcess) -> None:
    with Client(curve_daemon.control_addr, timeout=1) as client, pytest.raises(DeadlineExceeded):
        client.ping()


def test_the_queueserver_key_is_admitted_when_configured(
    curve_daemon: DaemonProcess, keys: dict[str, tuple[str, str]]
) -> None:
    qserver = CurveKeys(keys["server"][0], QSERVER_CLIENT_PUBLIC_KEY, QSERVER_CLIENT_SECRET_KEY)
    with Client(curve_daemon.control_addr, timeout=5, curve=qserver) as client:
        assert client.ping().daemon_state == "running"


def test_the_info_stream_is_encrypted_and_allow_listed_too(
    curve_daemon: DaemonProcess, keys: dict[str, tuple[str, str]]
) -> None:
    with Subscriber(curve_daemon.info_addr, ["QS_Info"], curve=curve_for(keys, "alice")) as sub:
        assert sub.recv(timeout=5).topic == "QS_Info"
    with (
        Subscriber(curve_daemon.info_addr, ["QS_Info"], curve=curve_for(keys, "mallory")) as sub,
        pytest.raises(DeadlineExceeded),
    ):
        sub.recv(timeout=2.5)  # QS_Info is published every second: two and a half periods of silence


def test_keys_generated_by_the_cli_secure_a_daemon(tmp_path: Path) -> None:
    import subprocess
    import sys

    for name in ("server", "operator"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "stationd.daemon",
                "keys",
                "generate",
                "--dir",
                str(tmp_path / "keys"),
                "--name",
                name,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "public key" in out
    secret_file = tmp_path / "keys" / "server.key_secret"
    assert secret_file.stat().st_mode & 0o077 == 0  # the secret is private to its owner
    operator_public = (
        (tmp_path / "keys" / "operator.key").read_text().split('public-key = "')[1].split('"')[0]
    )
    config = f"""
[security]
server_secret_key_file = "{secret_file}"

[[security.clients]]
public_key = "{operator_public}"
user = "operator"
"""
    d = start_daemon(tmp_path, config=config)
    try:
        keys = CurveKeys.from_files(
            str(tmp_path / "keys" / "server.key"), str(tmp_path / "keys" / "operator.key_secret")
        )
        with Client(d.control_addr, timeout=5, curve=keys) as client:
            assert client.ping().daemon_state == "running"
    finally:
        assert d.stop() == 0


def test_queue_items_carry_the_identity_of_the_key_not_of_the_request(
    curve_daemon: DaemonProcess, keys: dict[str, tuple[str, str]]
) -> None:
    count = {"item_type": "plan", "name": "count", "args": [["det1"]]}
    claimed = {"user": "mallory", "user_group": "primary"}
    with Client(curve_daemon.control_addr, timeout=5, curve=curve_for(keys, "alice")) as client:
        item = client.request("queue_item_add", {"item": count, **claimed})["item"]
        assert (item["user"], item["user_group"]) == ("alice", "test_user")
        # test_user may not use det3, whatever group the request claims
        refused = client.request_raw("queue_item_add", {"item": {**count, "args": [["det3"]]}, **claimed})
        assert refused["success"] is False and "det3" in refused["msg"]
        lock = client.request("lock", {"lock_key": "k", "queue": True, "user": "mallory"})
        assert lock["lock_info"]["user"] == "alice"
        client.request("unlock", {"lock_key": "k"})

    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    rm = REManagerAPI(zmq_control_addr=curve_daemon.control_addr, zmq_public_key=keys["server"][0])
    try:
        item = rm.item_add(BPlan("count", ["det1"]), user="someone", user_group="test_user")["item"]
    finally:
        rm.close()
    assert (item["user"], item["user_group"]) == ("beamline", "primary")  # the qserver key's identity
