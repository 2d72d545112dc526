"""The proof experiment's judgement, pure: validate the cohorts, compare them, give a verdict (proof-baselines §5–8).

Input is one `PairRow` per (cohort, replicate, held-out env), read from what the runs wrote (episode outcomes and
per-epoch telemetry). Validation fails closed: any blocker prevents a product verdict, and no control is ever
replaced by a stand-in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from leyline_schemas.policy_ids import FIXED_SCHEDULE_POLICY_ID
from services.experiments.cluster_statistics import bonferroni_level, cluster_comparison, cluster_median
from services.experiments.compute_to_target import compute_to_target
from services.tamiyo.schedules import SCHEDULES, realised_delays

TREATMENT, STATIC_INITIAL, STATIC_FINAL = "treatment", "static-initial", "static-final"
OFF_SWITCH, FIXED_SCHEDULE, RANDOM, HEURISTIC = "off-switch", "fixed-schedule", "random", "heuristic"
COHORTS = (TREATMENT, OFF_SWITCH, STATIC_INITIAL, STATIC_FINAL, FIXED_SCHEDULE, RANDOM, HEURISTIC)
PROOF_GRADE_REPLICATES = 5
MAX_ROLLBACK_SHARE = 0.10
OFF_SWITCH_TOLERANCE = 1e-6  # declared: exact on CPU in practice (B1)


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    accuracy: float
    loss: float
    train_flops: int
    params_in_forward: int
    order_hash: str
    op: str
    outcome: str


@dataclass(frozen=True)
class PairRow:
    cohort: str
    replicate: int
    env: int
    final_accuracy: float
    seed_params_added: int
    committed_params: int
    parameter_epochs: int
    train_flops: int
    rollbacks: int
    germinated: int
    fossilized: int
    pruned: int
    topology_hash: str
    curve: tuple[EpochPoint, ...]
    dead_params: int = 0
    uncommitted_params: int = 0
    replayed_hash: str = ""
    flags: tuple[str, ...] = ()
    #: Steps decided by another version than the one evaluated, or by none (the treatment's; 0 expected).
    version_mismatches: int = 0

    @property
    def pair(self) -> tuple[int, int]:
        return (self.replicate, self.env)

    def cumulative_curve(self) -> list[tuple[float, float]]:
        total, points = 0, []
        for point in self.curve:
            total += point.train_flops
            points.append((float(total), point.accuracy))
        return points


@dataclass(frozen=True)
class Blocker:
    kind: str  # INSTRUMENTATION, PRECISION, MATH, MECHANICS
    check: str
    detail: str


@dataclass
class Judgement:
    verdict: str
    blockers: list[Blocker]
    checks: list[dict[str, Any]]
    primary: dict[str, dict[str, Any]]
    secondary: dict[str, dict[str, Any]]
    compute_to_target: list[dict[str, Any]] = field(default_factory=list)


def _by_cohort(rows: Sequence[PairRow]) -> dict[str, dict[tuple[int, int], list[PairRow]]]:
    table: dict[str, dict[tuple[int, int], list[PairRow]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        table[row.cohort][row.pair].append(row)
    return table


def validate(rows: Sequence[PairRow], cohorts: Sequence[str], pairs: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Every check of §6 as {check, kind, passed, detail}; a failed check is a blocker of its kind."""
    table = _by_cohort(rows)
    checks: list[dict[str, Any]] = []

    def check(name: str, kind: str, failures: list[str]) -> None:
        checks.append({"check": name, "kind": kind, "passed": not failures, "detail": "; ".join(failures[:5])})

    check(
        "one valid episode per cohort and pair",
        "INSTRUMENTATION",
        [
            f"{c} {p}: {len(table[c].get(p, []))} episodes"
            for c in cohorts
            for p in pairs
            if len(table[c].get(p, [])) != 1
        ],
    )
    one = {c: {p: rs[0] for p, rs in table[c].items() if len(rs) == 1} for c in cohorts}
    malformed = [
        f"{r.cohort} {r.pair}"
        for r in rows
        if not 0.0 <= r.final_accuracy <= 100.0
        or r.fossilized > r.germinated
        or not r.curve
        or r.train_flops <= 0
        or any(p.train_flops <= 0 for p in r.curve)
    ]
    check("outcomes well formed, every epoch has its compute", "INSTRUMENTATION", malformed)
    check(
        "the treatment decided by the version it evaluates",
        "INSTRUMENTATION",
        [f"{r.pair}: {r.version_mismatches} steps" for r in rows if r.cohort == TREATMENT and r.version_mismatches],
    )
    order = []
    for p in pairs:
        hashes = {c: tuple(pt.order_hash for pt in one[c][p].curve) for c in cohorts if p in one[c]}
        if len(set(hashes.values())) > 1:
            order.append(f"pair {p}: data order differs between {sorted(hashes)}")
    check("data order equal within every pair", "INSTRUMENTATION", order)
    if OFF_SWITCH in cohorts and STATIC_INITIAL in cohorts:
        inert = []
        for p in pairs:
            off, still = one[OFF_SWITCH].get(p), one[STATIC_INITIAL].get(p)
            if (
                off
                and still
                and any(
                    abs(a.loss - b.loss) > OFF_SWITCH_TOLERANCE or abs(a.accuracy - b.accuracy) > OFF_SWITCH_TOLERANCE
                    for a, b in zip(off.curve, still.curve, strict=False)
                )
            ):
                inert.append(f"pair {p}")
        check("off-switch trains exactly as static-initial (the machinery is inert)", "MATH", inert)
    frozen = [
        f"{r.cohort} {r.pair}" for r in rows if r.cohort in (OFF_SWITCH, STATIC_INITIAL, STATIC_FINAL) and r.germinated
    ]
    check("static controls never mutate", "MATH", frozen)
    if STATIC_FINAL in cohorts:
        replay = []
        for p in pairs:
            source, final = one[TREATMENT].get(p), one[STATIC_FINAL].get(p)
            if source is None or final is None or "no_growth" in final.flags:
                continue
            if final.replayed_hash != source.topology_hash:
                replay.append(f"pair {p}: replayed {final.replayed_hash[:8]} != source {source.topology_hash[:8]}")
            elif final.curve and final.curve[0].params_in_forward != source.committed_params:
                replay.append(
                    f"pair {p}: {final.curve[0].params_in_forward} params in forward, source committed "
                    f"{source.committed_params}"
                )
        check("static-final replays the treatment's committed architecture exactly", "MATH", replay)
    if FIXED_SCHEDULE in cohorts:
        schedule = SCHEDULES[FIXED_SCHEDULE_POLICY_ID]
        trace = []
        for p, row in one[FIXED_SCHEDULE].items():
            applied = {pt.epoch: pt.op for pt in row.curve if pt.outcome == "applied"}
            _, problem = realised_delays(schedule, applied)
            if problem:
                trace.append(f"pair {p}: {problem}")
        check("fixed schedule realised as declared (delays within 3)", "MATH", trace)
    with_rollback = {r.pair for r in rows if r.rollbacks}
    share = len(with_rollback) / max(1, len(pairs))
    check(
        f"governor rollbacks in at most {MAX_ROLLBACK_SHARE:.0%} of pairs",
        "MECHANICS",
        [f"{share:.0%} of pairs rolled back"] if share > MAX_ROLLBACK_SHARE else [],
    )
    return checks


def _diffs(one: Mapping[str, Mapping[tuple[int, int], PairRow]], a: str, b: str) -> dict[int, list[float]]:
    diffs: dict[int, list[float]] = defaultdict(list)
    for p, row in sorted(one[a].items()):
        other = one[b].get(p)
        if other is not None:
            diffs[p[0]].append(row.final_accuracy - other.final_accuracy)
    return dict(diffs)


def _ctt(one: Mapping[str, Mapping[tuple[int, int], PairRow]]) -> list[dict[str, Any]]:
    rows = []
    for p, treated in sorted(one[TREATMENT].items()):
        final = one[STATIC_FINAL].get(p)
        if final is None or len(treated.curve) < 3 or len(final.curve) < 3:
            continue
        try:
            result = compute_to_target(treated.cumulative_curve(), final.cumulative_curve())
        except ValueError as exc:  # a curve without compute: the instrumentation check has blocked already
            rows.append({"replicate": p[0], "env": p[1], "error": str(exc), "ratio": None, "reached": False})
            continue
        rows.append({"replicate": p[0], "env": p[1], **result.as_dict()})
    return rows


def judge(
    rows: Sequence[PairRow], cohorts: Sequence[str], replicates: int, pairs: Sequence[tuple[int, int]]
) -> Judgement:
    checks = validate(rows, cohorts, pairs)
    blockers = [Blocker(c["kind"], c["check"], c["detail"]) for c in checks if not c["passed"]]
    table = _by_cohort(rows)
    one = {c: {p: rs[0] for p, rs in table[c].items() if len(rs) == 1} for c in cohorts}
    level = bonferroni_level(4)
    primary: dict[str, dict[str, Any]] = {}
    for key, other in (("P1", STATIC_INITIAL), ("P3", FIXED_SCHEDULE), ("P4", RANDOM)):
        if other in cohorts:
            diffs = _diffs(one, TREATMENT, other)
            primary[key] = {"comparison": f"{TREATMENT} − {other}", **cluster_comparison(diffs, level).as_dict()}
    ctt = _ctt(one) if STATIC_FINAL in cohorts else []
    if ctt:
        by_rep: dict[int, list[float]] = defaultdict(list)
        for row in ctt:
            by_rep[row["replicate"]].append(math.inf if row["ratio"] is None else float(row["ratio"]))
        median = cluster_median(by_rep, level)
        share = sum(1 for row in ctt if row["reached"]) / len(ctt)
        passed = share >= 0.5 and median.high < 1.0
        failed = median.low >= 1.0 or share < 0.5
        primary["P2"] = {
            "comparison": f"median compute-to-target ratio {TREATMENT} / {STATIC_FINAL}",
            **median.as_dict(),
            "share_reached": round(share, 4),
            "status": _ratio_status(passed, failed, replicates),
        }
    secondary = {}
    for a, b in (
        (TREATMENT, HEURISTIC),
        (STATIC_FINAL, STATIC_INITIAL),
        (TREATMENT, STATIC_FINAL),
        (HEURISTIC, STATIC_INITIAL),
        (RANDOM, STATIC_INITIAL),
        (FIXED_SCHEDULE, STATIC_INITIAL),
    ):
        if a in cohorts and b in cohorts:
            secondary[f"{a} − {b}"] = cluster_comparison(_diffs(one, a, b), 0.95).as_dict()
    verdict = _verdict(blockers, replicates, primary, secondary)
    return Judgement(verdict, blockers, checks, primary, secondary, ctt)


def _ratio_status(passed: bool, failed: bool, replicates: int) -> str:
    """P2's status; one replicate gives no interval worth the name, so it stays inconclusive."""
    if replicates < 2:
        return "inconclusive"
    return "pass" if passed else ("fail" if failed else "inconclusive")


def _verdict(
    blockers: Sequence[Blocker],
    replicates: int,
    primary: Mapping[str, Mapping[str, Any]],
    secondary: Mapping[str, Mapping[str, Any]],
) -> str:
    """Precedence of §8: BLOCKED_* > REHEARSAL > NO_HEADROOM > product verdicts."""
    for kind in ("INSTRUMENTATION", "PRECISION", "MATH", "MECHANICS"):
        if any(b.kind == kind for b in blockers):
            return f"BLOCKED_{kind}"
    if replicates < PROOF_GRADE_REPLICATES:
        return "REHEARSAL"
    headroom = secondary.get(f"{STATIC_FINAL} − {STATIC_INITIAL}", {})
    if headroom and not (headroom.get("low") is not None and float(headroom["low"]) > 0):
        return "NO_HEADROOM"
    statuses = {key: primary.get(key, {}).get("status", "inconclusive") for key in ("P1", "P2", "P3", "P4")}
    if statuses["P1"] == "fail":
        return "STOP_THEORY"
    if statuses["P1"] != "pass":
        return "INCONCLUSIVE"
    return "CONTINUE" if all(s == "pass" for s in statuses.values()) else "REVISE_ALGORITHM"
