"""The IQM-style Python client and `stationctl obs` against the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from stationd.protocol import observations as o
from stationd.protocol.errors import Conflict, InvalidQuery
from stationd.protocol.station import StationControlClient
from tests.support.daemon import DaemonProcess


def definition(field: str, value: object, **kw: object) -> o.ObservationDefinition:
    return o.ObservationDefinition(
        dut_label="QB1",
        dut_field=field,
        value=value,
        source={"type": "measurement_source"},
        **kw,  # type: ignore[arg-type]
    )


def test_observations_round_trip_through_json_with_their_types(daemon: DaemonProcess) -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    with StationControlClient(daemon.control_addr, timeout=5) as client:
        created = client.create_observations(
            [
                definition("QB1.f", 4.5e9, unit="Hz", tags=["a"]),
                definition("QB1.iq", arr),
                definition("QB1.z", 1 - 1j),
            ]
        )
        assert [c.observation_id for c in created] == [1, 2, 3]
        found = client.query_observations(dut_label="QB1", order_by="observation_id", limit=2)
        assert found.meta.count == 3 and len(found) == 2
        assert isinstance(found[0], o.ObservationData) and found[0].value == 4.5e9
        assert found[1].value.dtype == np.float32
        np.testing.assert_array_equal(found[1].value, arr)
        assert client.query_observations(observation_id=3)[0].value == 1 - 1j
        with pytest.raises(InvalidQuery, match="created_timestamp__range: a range needs exactly two bounds"):
            client.query_observations(created_timestamp__range=["2026-01-01T00:00:00Z"])


def test_calibration_set_workflow_as_iqm_clients_use_it(daemon: DaemonProcess) -> None:
    with StationControlClient(daemon.control_addr, timeout=5) as client:
        made = client.create_observations([definition("QB1.f", 4.5e9), definition("QB1.t1", 3e-5)])
        cal = client.create_observation_set(
            o.ObservationSetDefinition(
                observation_set_type="calibration-set", observation_ids=[m.observation_id for m in made]
            )
        )
        assert client.get_latest_calibration_set_id("QB1") is None  # not finalized yet
        client.finalize_observation_set(cal.observation_set_id)
        assert client.get_latest_calibration_set_id("QB1") == cal.observation_set_id
        assert client.get_calibration_set_values(cal.observation_set_id) == {"QB1.f": 4.5e9, "QB1.t1": 3e-5}
        with pytest.raises(Conflict, match="only `invalid` may change"):
            client.update_observation_set(cal.observation_set_id, observation_ids=[1])
        assert client.update_observation_set(cal.observation_set_id, invalid=True).invalid
        assert client.get_latest_calibration_set_id("QB1") is None  # invalid sets are not used


def test_sequences_software_versions_and_messages(daemon: DaemonProcess) -> None:
    seq = uuid.uuid4()
    with StationControlClient(daemon.control_addr, timeout=5) as client:
        client.create_sequence_metadata(seq, "alice", "file:///tmp/x")
        assert client.query_sequence_metadatas(origin_id="alice")[0].sequence_id == seq
        client.save_sequence_result(seq, {"fidelity": 0.99}, final=True)
        assert client.get_sequence_result(seq).data == {"fidelity": 0.99}
        first = client.get_or_create_software_version_set({"stationd": "0.1.0"})
        assert client.get_or_create_software_version_set({"stationd": "0.1.0"}) == first
        client.insert_messages([{"topic": "cryo", "timestamp": 1_795_000_000.0, "temperature": 0.011}])
        assert client.query_messages(topic="cryo", temperature__range=[0, 0.02])[0]["temperature"] == 0.011


def stationctl(
    daemon: DaemonProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stationd.daemon.ctl", "--control-addr", daemon.control_addr, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_stationctl_creates_queries_and_finalizes(daemon: DaemonProcess, tmp_path: Path) -> None:
    defs = [
        {
            "dut_label": "QB1",
            "dut_field": "QB1.f",
            "value": 5.0,
            "source": {"type": "measurement_source"},
            "tags": ["a"],
        },
        {
            "dut_label": "QB1",
            "dut_field": "QB1.g",
            "value": 6.0,
            "source": {"type": "measurement_source"},
            "tags": ["b"],
        },
    ]
    created = stationctl(daemon, "obs", "create", "-", stdin=json.dumps(defs))
    assert created.returncode == 0, created.stderr
    assert "created 2 observations" in created.stdout
    table = stationctl(daemon, "obs", "query", "dut_label=QB1", "tags__overlap=a,x", "--limit", "50")
    assert table.returncode == 0 and "1 of 1 observations" in table.stdout and "QB1.f" in table.stdout
    made = json.loads(stationctl(daemon, "obs", "set-create", "calibration-set", "1", "2", "--json").stdout)
    final = stationctl(daemon, "obs", "set-finalize", made["observation_set_id"])
    assert final.returncode == 0 and "finalized" in final.stdout
    bad = stationctl(daemon, "obs", "query", "foo__bar=1")
    assert (
        bad.returncode == 1
        and "error [invalid_query]: foo__bar: observations has no field 'foo'" in bad.stderr
    )


def test_an_acknowledged_observation_survives_kill_9_of_the_daemon(tmp_path: Path) -> None:
    import os
    import signal

    from tests.support.daemon import start_daemon

    d = start_daemon(tmp_path)
    with StationControlClient(d.control_addr, timeout=5) as client:
        acknowledged = client.create_observations([definition(f"QB1.f{i}", float(i)) for i in range(50)])
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(5)
    d.notify.close()
    again = start_daemon(tmp_path, args=("--state-dir", str(d.state_dir)))
    try:
        with StationControlClient(again.control_addr, timeout=5) as client:
            found = client.query_observations(limit=0)
        assert [f.observation_id for f in found] == [a.observation_id for a in acknowledged]
        assert found[49].value == 49.0
    finally:
        again.stop()
