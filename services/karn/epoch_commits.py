"""Committed epochs in the store: one EpochBarrier per running run, persisted so a restarted Karn resumes it."""

from __future__ import annotations

import sqlite3

from services.karn.barrier import CommittedEpoch, EnvEpoch, EpochBarrier, envs_in_round


class EpochCommits:
    """Feeds each running run's per-env epochs through its barrier and writes what commits to `epochs`.

    Every method runs inside the caller's transaction; it returns how many epochs it committed.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._shapes: dict[str, tuple[int, int]] = {}
        self._barriers: dict[str, EpochBarrier] = {}
        for row in conn.execute("SELECT run_id, n_envs, episodes FROM runs WHERE n_envs > 0"):
            self._shapes[row["run_id"]] = (int(row["n_envs"]), int(row["episodes"]))

    def run_started(self, run_id: str, n_envs: int, episodes: int) -> None:
        if n_envs > 0:
            self._shapes[run_id] = (n_envs, episodes)

    def run_finished(self, run_id: str) -> int:
        """Flush what the run's envs left partial: nothing more will come."""
        barrier = self._barriers.pop(run_id, None)
        return self._write(run_id, barrier.flush()) if barrier is not None else 0

    def add(self, run_id: str, episode: int, epoch: int, report: EnvEpoch) -> int:
        barrier = self._barrier(run_id)
        if barrier is None:
            return 0
        n_envs = self._shapes[run_id][0]
        return self._write(run_id, barrier.add(episode // n_envs, epoch, report))

    def restore(self) -> int:
        """Re-buffer the per-env epochs of running runs that no committed epoch covers yet (after a restart)."""
        committed = 0
        for run_id, (n_envs, _) in self._shapes.items():
            barrier = self._barrier(run_id)
            if barrier is None:
                continue
            rows = self.conn.execute(
                "SELECT e.* FROM env_epochs e WHERE e.run_id = ? AND NOT EXISTS (SELECT 1 FROM epochs c "
                "WHERE c.run_id = e.run_id AND c.round = e.episode / ? AND c.epoch = e.epoch) ORDER BY e.timestamp",
                (run_id, n_envs),
            ).fetchall()
            for row in rows:
                report = EnvEpoch(
                    row["env_id"], row["val_accuracy"], row["val_loss"], row["train_accuracy"], row["train_loss"]
                )
                committed += self._write(run_id, barrier.add(row["episode"] // n_envs, row["epoch"], report))
        return committed

    def _barrier(self, run_id: str) -> EpochBarrier | None:
        """The run's barrier while it runs and its shape (envs, episodes) is known."""
        if run_id in self._barriers:
            return self._barriers[run_id]
        shape = self._shapes.get(run_id)
        if shape is None:
            return None
        row = self.conn.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None and row["state"] != "running":
            return None
        n_envs, episodes = shape
        barrier = EpochBarrier(lambda r: envs_in_round(n_envs, episodes, r))
        for done in self.conn.execute("SELECT round, epoch FROM epochs WHERE run_id = ?", (run_id,)):
            barrier.mark_committed(int(done["round"]), int(done["epoch"]))
        self._barriers[run_id] = barrier
        return barrier

    def _write(self, run_id: str, committed: list[CommittedEpoch]) -> int:
        for c in committed:
            # A committed epoch is final: a late duplicate never replaces it with a partial one.
            self.conn.execute(
                "INSERT OR IGNORE INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    c.round,
                    c.epoch,
                    c.n_expected,
                    c.n_reported,
                    c.val_accuracy,
                    c.val_loss,
                    c.train_accuracy,
                    c.train_loss,
                ),
            )
        return len(committed)
