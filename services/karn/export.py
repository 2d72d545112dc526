"""`esper karn export`: one run out of the store as JSON Lines (one file) or Parquet (one file per table)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leyline_schemas import StepRecord, TelemetryEvent, decode, to_builtins
from services.karn import queries
from services.karn.jsonsafe import json_ready
from services.karn.schema import SCHEMA_VERSION
from services.karn.store import RunStore

FORMATS = ("jsonl", "parquet")
#: Derived tables and the record name each row gets in JSON Lines.
TABLES = {"env_epochs": "env_epoch", "epochs": "epoch", "episodes": "episode", "seeds": "seed"}


def _table_rows(store: RunStore, table: str, run_id: str) -> tuple[list[str], list[dict[str, Any]]]:
    cursor_rows = store.read(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,))
    columns = [d[1] for d in store.read(f"PRAGMA table_info({table})")]
    return columns, [json_ready(dict(r)) for r in cursor_rows]


def _events(store: RunStore, run_id: str) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        rows = store.read(
            "SELECT seq, raw FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT 2000", (run_id, after)
        )
        if not rows:
            return
        for row in rows:
            event = decode(row["raw"], TelemetryEvent)
            yield json_ready({"seq": row["seq"], "kind": event.payload.__struct_config__.tag, **to_builtins(event)})
        after = int(rows[-1]["seq"])


def _steps(store: RunStore, run_id: str) -> Iterator[StepRecord]:
    for row in store.read("SELECT raw FROM steps WHERE run_id = ? ORDER BY env_id, episode, step", (run_id,)):
        yield decode(row["raw"], StepRecord)


def export_jsonl(store: RunStore, run_id: str, out: Path) -> int:
    """Write a header line (the run), then events, steps, derived tables and analytics; returns lines written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w") as sink:

        def line(record: str, data: dict[str, Any]) -> None:
            nonlocal count
            sink.write(json.dumps({"record": record, **data}, allow_nan=False, sort_keys=True) + "\n")
            count += 1

        line("run", {"store_schema_version": SCHEMA_VERSION, **queries.run_status(store, run_id)})
        for event in _events(store, run_id):
            line("event", event)
        for step in _steps(store, run_id):
            line("step", json_ready(to_builtins(step)))
        for table, record in TABLES.items():
            for row in _table_rows(store, table, run_id)[1]:
                line(record, row)
        line("analytics", queries.analytics(store, run_id))
    return count


def export_parquet(store: RunStore, run_id: str, out: Path) -> list[Path]:
    """Write `<out>/{events,steps,env_epochs,epochs,episodes,seeds}.parquet`; nested values as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    written = []
    events = [
        {
            "seq": e["seq"],
            "event_id": e["event_id"],
            "run_id": e["run_id"],
            "kind": e["kind"],
            "source": e["source"],
            "timestamp": e["timestamp"],
            "env_id": e["env_id"],
            "episode": e["episode"],
            "epoch": e["epoch"],
            "severity": e["severity"],
            "payload": json.dumps(e["payload"], allow_nan=False, sort_keys=True),
        }
        for e in _events(store, run_id)
    ]
    steps = [
        json_ready(
            {
                "run_id": s.run_id,
                "arm": s.arm,
                "env_id": s.env_id,
                "episode": s.episode,
                "step": s.step,
                "policy_id": s.policy_id,
                "policy_version": s.policy_version,
                "val_accuracy": s.report.val_accuracy,
                "val_loss": s.report.val_loss,
                "op": s.directive.effective_op.name,
                "outcome": s.directive.outcome.value,
                "target_slot": s.directive.target_slot,
                "applied": s.applied,
                "done": s.done,
                "report": json.dumps(json_ready(to_builtins(s.report)), allow_nan=False, sort_keys=True),
                "directive": json.dumps(json_ready(to_builtins(s.directive)), allow_nan=False, sort_keys=True),
            }
        )
        for s in _steps(store, run_id)
    ]
    tables: dict[str, tuple[list[str], list[dict[str, Any]]]] = {
        "events": (list(events[0]) if events else ["seq", "kind", "payload"], events),
        "steps": (list(steps[0]) if steps else ["env_id", "episode", "step"], steps),
    }
    for table in TABLES:
        tables[table] = _table_rows(store, table, run_id)
    for name, (columns, rows) in tables.items():
        path = out / f"{name}.parquet"
        pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in columns}), path)
        written.append(path)
    return written


def export_run(store: RunStore, run_id: str, fmt: str, out: Path) -> str:
    """Export and describe what was written; UnknownRun for a run the store does not hold."""
    queries.require_run(store, run_id)
    if fmt == "jsonl":
        return f"wrote {export_jsonl(store, run_id, out)} lines to {out}"
    if fmt == "parquet":
        paths = export_parquet(store, run_id, out)
        return f"wrote {len(paths)} Parquet tables to {out}/ ({', '.join(p.name for p in paths)})"
    raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
