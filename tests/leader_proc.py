"""A process that only contends for leadership (for fail-over tests and benchmarks):
ticks every CHECK seconds and prints one JSON line whenever its leadership changes."""

from __future__ import annotations

import json
import sys
import time

from vpp.config import DatabaseSettings
from vpp.leader import Leadership
from vpp.store import db


def main() -> None:
    url, schema, holder, check_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    engine = db.create_db_engine(DatabaseSettings(url=url, schema_name=schema))  # type: ignore[arg-type]
    lead = Leadership(engine, holder=holder)
    was = None
    while True:
        now = lead.tick()
        if now != was:
            print(
                json.dumps(
                    {"holder": holder, "leader": now, "term": lead.generation, "t": time.time()}
                ),
                flush=True,
            )
            was = now
        time.sleep(check_s)


if __name__ == "__main__":
    main()
