"""Ask a running stationd for its status and print the actor tree.

stationd serve &            # or: make serve
python examples/status.py   # uses $STATIOND_CONTROL_ADDR, default tcp://127.0.0.1:60615
"""

from __future__ import annotations

from stationd.protocol.client import Client


def main() -> None:
    with Client(timeout=5) as client:
        status = client.status()
        print(
            f"{status.msg} (protocol {status.protocol_version}), pid {status.pid}, up {status.uptime:.1f} s"
        )
        for actor in status.actors:
            depth = 0 if actor.parent is None else 1
            print(
                f"{'  ' * depth}{actor.name:<20} {actor.kind:<10} {actor.mode:<8} {actor.state:<10} "
                f"restarts={actor.restarts}"
            )
        config = client.config_get()
        print(f"state directory: {config['stationd']['state_dir']}")


if __name__ == "__main__":
    main()
