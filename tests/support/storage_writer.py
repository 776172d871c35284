"""Writes records one by one and prints each id once the store acknowledged it (killed by the test)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from stationd.actors.storage import SQLiteStore
from tests.actors.storage.records import RECS, rec


async def main(path: Path) -> None:
    store = SQLiteStore(path, [RECS])
    await store.open()
    i = 0
    while True:
        (r,) = await store.insert("recs", [rec(f"r{i}", tags=[f"t{i % 7}"])])
        print(r.rec_id, flush=True)
        i += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
