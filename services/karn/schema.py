"""The run store's SQLite schema: ordered migrations, and opening a file that is migrated or refused, never damaged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: `PRAGMA application_id` of a Karn store ("KARN"): a foreign SQLite file is refused, not adopted.
APPLICATION_ID = 0x4B41524E

#: Migration i brings a store from schema version i to i + 1; a new store runs them all.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, task TEXT, n_envs INTEGER, episodes INTEGER, episode_length INTEGER,
            slot_ids TEXT NOT NULL DEFAULT '[]', policy_id TEXT, reward_mode TEXT,
            state TEXT NOT NULL DEFAULT 'running', message TEXT NOT NULL DEFAULT '',
            started_at REAL, finished_at REAL, last_event_at REAL)""",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL,
            kind TEXT NOT NULL, source TEXT NOT NULL, timestamp REAL NOT NULL, env_id INTEGER, episode INTEGER,
            epoch INTEGER, severity TEXT NOT NULL, slot_id TEXT, seed_id TEXT, raw BLOB NOT NULL)""",
        "CREATE INDEX events_by_run ON events (run_id, seq)",
        "CREATE INDEX events_by_seed ON events (run_id, env_id, episode, seed_id)",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL, env_id INTEGER NOT NULL, episode INTEGER NOT NULL, step INTEGER NOT NULL,
            arm TEXT NOT NULL, policy_id TEXT NOT NULL, policy_version INTEGER NOT NULL,
            val_accuracy REAL, val_loss REAL, op TEXT NOT NULL, outcome TEXT NOT NULL, target_slot TEXT NOT NULL,
            applied INTEGER NOT NULL, done INTEGER NOT NULL, host_params INTEGER, total_params INTEGER,
            received_at REAL NOT NULL, raw BLOB NOT NULL,
            PRIMARY KEY (run_id, env_id, episode, step))""",
        """CREATE TABLE env_epochs (
            run_id TEXT NOT NULL, env_id INTEGER NOT NULL, episode INTEGER NOT NULL, epoch INTEGER NOT NULL,
            val_accuracy REAL, val_loss REAL, train_accuracy REAL, train_loss REAL, op TEXT, target_slot TEXT,
            outcome TEXT, policy_id TEXT, policy_version INTEGER, host_params INTEGER, total_params INTEGER,
            slots TEXT NOT NULL DEFAULT '{}', contributions TEXT NOT NULL DEFAULT '{}', timestamp REAL,
            PRIMARY KEY (run_id, env_id, episode, epoch))""",
        """CREATE TABLE epochs (
            run_id TEXT NOT NULL, round INTEGER NOT NULL, epoch INTEGER NOT NULL, n_expected INTEGER NOT NULL,
            n_reported INTEGER NOT NULL, val_accuracy REAL, val_loss REAL, train_accuracy REAL, train_loss REAL,
            PRIMARY KEY (run_id, round, epoch))""",
        """CREATE TABLE seeds (
            run_id TEXT NOT NULL, env_id INTEGER NOT NULL, episode INTEGER NOT NULL, seed_id TEXT NOT NULL,
            slot_id TEXT NOT NULL, blueprint TEXT NOT NULL, stage TEXT NOT NULL, germinated_epoch INTEGER,
            ended_epoch INTEGER, params INTEGER NOT NULL DEFAULT 0, improvement REAL, counterfactual REAL,
            blending_delta REAL, epochs_total INTEGER NOT NULL DEFAULT 0, prune_reason TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (run_id, env_id, episode, seed_id))""",
        """CREATE TABLE episodes (
            run_id TEXT NOT NULL, env_id INTEGER NOT NULL, episode INTEGER NOT NULL, final_accuracy REAL,
            host_params INTEGER, seed_params_added INTEGER, param_ratio REAL, seeds_germinated INTEGER,
            seeds_fossilized INTEGER, seeds_pruned INTEGER, episode_return REAL, reward_mode TEXT, length INTEGER,
            policy_id TEXT, rollbacks INTEGER, timestamp REAL,
            PRIMARY KEY (run_id, env_id, episode))""",
        "CREATE TABLE stream_positions (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ),
    (
        # v2: policy lines and their versions, with the PPO statistics of the update that made each one.
        """CREATE TABLE policy_versions (
            policy_id TEXT NOT NULL, version INTEGER NOT NULL, run_id TEXT, sha256 TEXT NOT NULL DEFAULT '',
            updated_at REAL, policy_loss REAL, value_loss REAL, entropy REAL, approx_kl REAL, clip_fraction REAL,
            explained_variance REAL, head_entropies TEXT NOT NULL DEFAULT '{}', version_lag_mean REAL,
            steps INTEGER, epochs_run INTEGER, skipped INTEGER NOT NULL DEFAULT 0,
            load_failure TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (policy_id, version))""",
    ),
    (
        # v3: the attempt of a restarted episode; a later attempt's step replaces the earlier attempt's.
        "ALTER TABLE steps ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # v4 (plans/kasmina2-phase0.md §9 item 2): a microstructured seed's level, and how often it moved and turned;
        # whether a step could have changed a level, read from its masks before the store drops them.
        "ALTER TABLE seeds ADD COLUMN internal_level INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE seeds ADD COLUMN internal_max_level INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE seeds ADD COLUMN level_changes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE seeds ADD COLUMN level_reversals INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE seeds ADD COLUMN last_level_delta INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE steps ADD COLUMN internal_ops_legal INTEGER NOT NULL DEFAULT 0",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreSchemaError(RuntimeError):
    """A store file this Karn cannot use as it is; the file was left untouched."""


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def _header(conn: sqlite3.Connection, path: Path) -> tuple[int, int, list[str]]:
    try:
        application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = _tables(conn)
    except sqlite3.DatabaseError as exc:
        raise StoreSchemaError(f"{path} is not a Karn run store (not an SQLite database: {exc})") from exc
    return application_id, version, tables


def migrate(conn: sqlite3.Connection, path: Path, target: int = SCHEMA_VERSION) -> int:
    """Bring the store up to `target` in one transaction; returns the version it had. Refuses what it cannot read."""
    application_id, version, tables = _header(conn, path)
    fresh = application_id == 0 and version == 0 and not tables
    if not fresh and application_id != APPLICATION_ID:
        raise StoreSchemaError(
            f"{path} is an SQLite database but not a Karn run store (application id {application_id:#x}); "
            "refusing to touch it: pass another --store path"
        )
    if version > SCHEMA_VERSION:
        raise StoreSchemaError(
            f"{path} has run-store schema v{version}, newer than this Karn understands (v{SCHEMA_VERSION}); "
            "upgrade Karn or rebuild a store from the streams with `esper karn rebuild --store NEW_PATH`"
        )
    if version >= target:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statements in MIGRATIONS[version:target]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {target}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return version


def connect(path: Path, target: int = SCHEMA_VERSION) -> sqlite3.Connection:
    """Open (creating if absent) a store at `path`, migrated to `target`; StoreSchemaError if refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        migrate(conn, path, target)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row
    return conn
