#!/usr/bin/env python3
"""Python Sagaz's trigger path, measured for cmd/bench (docs/benchmarks.md).

Events arrive one after another through Sagaz's documented trigger mechanism
(a @trigger method on a Saga subclass, fired with sagaz.core.triggers.fire_event,
idempotency key "id"); each starts a saga of 3 no-op steps (a -> b -> c) that
the trigger engine runs to completion in the background, recording its state
in the configured storage (SQLite in a file in a temporary directory, or
memory). Timed from the first event to the last saga recorded "completed".

Prints one JSON line:
  {"sagas": n, "seconds": s, "rate": r, "storage": "sqlite", "version": "1.5.0"}
Exits non-zero with a message on stderr if a saga did not complete.

Run inside the virtualenv that has sagaz (and aiosqlite for SQLite):
  .cache/sagaz-py/bin/python scripts/bench_sagaz.py --storage sqlite
"""

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from sagaz import Saga, SagaConfig, action, configure
from sagaz.core.types import SagaStatus
from sagaz.core.triggers import fire_event, trigger

SOURCE = "orders"


class BenchSaga(Saga):
    """The harness's bench saga: 3 no-op steps, started by an order event."""

    saga_name = "bench"

    @trigger(source=SOURCE, idempotency_key="id")
    def on_order(self, event):
        return {"id": event["id"], "amount": event["amount"], "customer": event["customer"]}

    @action("a")
    async def a(self, ctx):
        return None

    @action("b", depends_on=["a"])
    async def b(self, ctx):
        return None

    @action("c", depends_on=["b"])
    async def c(self, ctx):
        return None


def make_storage(kind, tmp):
    if kind == "memory":
        from sagaz.core.storage.backends.memory import InMemorySagaStorage

        return InMemorySagaStorage()
    from sagaz.core.storage.backends.sqlite import SQLiteSagaStorage

    return SQLiteSagaStorage(str(Path(tmp) / "sagas.db"))


async def run(args, tmp):
    storage = make_storage(args.storage, tmp)
    if hasattr(storage, "initialize"):
        await storage.initialize()
    # The listeners that log or count every step are off: the set-up most
    # favourable to Python Sagaz (its defaults would only make it slower).
    configure(SagaConfig(storage=storage, metrics=False, logging=False, tracing=False))

    me = asyncio.current_task()
    fired = 0
    start = time.perf_counter()
    for i in range(args.events):
        if time.perf_counter() - start >= args.max_seconds:
            break
        oid = f"o-{i}"
        ids = await fire_event(SOURCE, {"id": oid, "amount": 12.5, "customer": f"c-{i % 1000}"})
        if len(ids) != 1:
            raise RuntimeError(f"event {oid} started {len(ids)} sagas, expected 1")
        fired += 1
    # The trigger engine runs each saga as a background task of this loop:
    # wait for all of them (each ends after recording its final state).
    pending = [t for t in asyncio.all_tasks() if t is not me]
    if pending:
        done, not_done = await asyncio.wait(pending, timeout=args.drain_seconds)
        if not_done:
            raise RuntimeError(f"{len(not_done)} sagas still running after {args.drain_seconds}s")
    seconds = time.perf_counter() - start

    completed = await storage.list_sagas(status=SagaStatus.COMPLETED, limit=fired + 1)
    if len(completed) != fired:
        raise RuntimeError(f"{len(completed)} of {fired} sagas recorded completed")
    if hasattr(storage, "close"):
        await storage.close()
    return {
        "sagas": fired,
        "seconds": round(seconds, 4),
        "rate": round(fired / seconds, 1),
        "storage": args.storage,
        "version": version("sagaz"),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite")
    p.add_argument("--events", type=int, default=2000, help="events to fire (default 2000)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="stop firing after this long (default 20)")
    p.add_argument("--drain-seconds", type=float, default=60.0, help="how long the started sagas may take to finish")
    args = p.parse_args()
    if args.events < 1:
        p.error("--events must be at least 1")
    logging.getLogger("sagaz").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sagaz-py-bench-") as tmp:
        try:
            out = asyncio.run(run(args, tmp))
        except Exception as e:  # noqa: BLE001 - reported to the harness
            print(f"bench_sagaz: {e}", file=sys.stderr)
            sys.exit(1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
