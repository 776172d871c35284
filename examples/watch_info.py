"""Follow a running stationd's info stream: status updates (QS_Info) and log lines, with gap detection.

python examples/watch_info.py [COUNT]   # uses $STATIOND_INFO_ADDR, default tcp://127.0.0.1:60625
"""

from __future__ import annotations

import sys

from stationd.protocol.client import Subscriber


def main(count: int) -> None:
    with Subscriber(topics=["QS_Info", "log"]) as sub:
        for _ in range(count):
            event = sub.recv(timeout=10)
            if event.missed:
                print(f"!! missed {event.missed} messages on {event.topic}")
            if event.topic == "QS_Info":
                status = event.payload["msg"]["status"]
                print(f"#{event.seq} status: {status['daemon_state']}, {len(status['actors'])} actors")
            else:
                log = event.payload
                print(f"#{event.seq} log: [{log['level']}] {log['actor']}: {log['event']}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
