"""Experiment reports for the web view: the result directories under a reports root (e.g. `docs/results`), read
from the verdict each experiment command wrote.

A directory is a report when it holds `verdict.json` (proof, reward-efficiency, …) or `ladder_verdict.json`. The
summary keeps what a reader compares: the verdict, the settings, the cohort table with its intervals, the
pre-registered comparisons, the checks, and accuracy against cumulative training FLOPs per cohort (the mean over
paired episodes at each epoch). Nothing is computed that the verdict does not hold; a missing part is None.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from services.karn.jsonsafe import json_ready

VERDICT_FILES = ("verdict.json", "ladder_verdict.json")


class UnknownReport(LookupError):
    """No report directory of this name under the reports root."""


def _verdict_file(directory: Path) -> Path | None:
    for name in VERDICT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _title(directory: Path) -> str:
    report = directory / "report.md"
    if report.is_file():
        for line in report.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return directory.name


def _read(directory: Path) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The directory's listing entry and its parsed verdict; None when it holds no verdict file. An unreadable
    verdict is listed with kind `unreadable` and no verdict."""
    verdict_file = _verdict_file(directory)
    if verdict_file is None:
        return None
    try:
        verdict = json.loads(verdict_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"name": directory.name, "title": _title(directory), "kind": "unreadable", "error": str(exc)}, None
    entry = {
        "name": directory.name,
        "title": _title(directory),
        "kind": _kind(verdict),
        "verdict": _verdict_word(verdict.get("verdict")),
    }
    return entry, verdict


def list_reports(root: Path | None) -> list[dict[str, Any]]:
    """Every report directory directly under `root`, by name; empty when there is no root."""
    if root is None or not root.is_dir():
        return []
    read = (_read(directory) for directory in sorted(p for p in root.iterdir() if p.is_dir()))
    return [found[0] for found in read if found is not None]


def _verdict_word(verdict: Any) -> str | None:
    """The one-word verdict: the proof's string, or the reward-efficiency exam's `overall`."""
    if isinstance(verdict, str):
        return verdict
    if isinstance(verdict, dict) and isinstance(verdict.get("overall"), str):
        return str(verdict["overall"])
    return None


def _exam_cohorts(cohorts: dict[str, Any]) -> list[dict[str, Any]]:
    """The reward-efficiency exam's cohort dict as table rows (its episodes are the pairs)."""
    return [
        {
            "cohort": name,
            "pairs": row.get("episodes"),
            "final_accuracy": row.get("final_accuracy"),
            "seed_params_added": (row.get("seed_params_added") or {}).get("mean"),
        }
        for name, row in cohorts.items()
        if isinstance(row, dict)
    ]


def _exam_criteria(criteria: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, c in criteria.items():
        if not isinstance(c, dict):
            continue
        difference = c.get("difference") or {}
        rows.append(
            {
                "id": key,
                "comparison": f"{c.get('treatment')} − {c.get('control')} ({c.get('metric')})",
                "estimate": difference.get("mean"),
                "low": difference.get("low"),
                "high": difference.get("high"),
                "level": None,
                "status": c.get("status"),
            }
        )
    return rows


def _kind(verdict: dict[str, Any]) -> str:
    if "cohorts" in verdict and isinstance(verdict.get("curves"), dict):
        return "proof"
    if "checks" in verdict and "experiment" in verdict and "control_blueprints" in verdict:
        return "ladder"
    return str(verdict.get("experiment") or "experiment")


def flops_curves(curves: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per cohort, the mean accuracy and mean cumulative training GFLOPs at each epoch over its episodes.

    `curves` maps "cohort/replicate/env" to per-epoch rows with `accuracy` and `train_flops` (that epoch's cost).
    An epoch's point averages only the episodes that reached it with a finite accuracy; `n` says how many.
    """
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0, 0.0]))
    for key, rows in curves.items():
        cohort = key.split("/", 1)[0]
        spent = 0.0
        for row in sorted(rows, key=lambda r: int(r["epoch"])):
            spent += float(row.get("train_flops") or 0.0)
            accuracy = row.get("accuracy")
            if accuracy is None or not math.isfinite(float(accuracy)):
                continue
            cell = sums[cohort][int(row["epoch"])]
            cell[0] += float(accuracy)
            cell[1] += spent / 1e9
            cell[2] += 1
    return {
        cohort: [
            {"epoch": epoch, "accuracy": a / n, "cumulative_gflops": g / n, "n": int(n)}
            for epoch, (a, g, n) in sorted(by_epoch.items())
        ]
        for cohort, by_epoch in sorted(sums.items())
    }


def _cohort_rows(cohorts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = (
        "cohort",
        "pairs",
        "final_accuracy",
        "delta_vs_static_initial",
        "seed_params_added",
        "committed_params",
        "roi_per_1k_params",
        "train_gflops",
        "rollbacks",
        "flags",
    )
    return [{k: row.get(k) for k in keep} for row in cohorts]


def _comparisons(primary: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not isinstance(primary, dict):
        return []
    return [
        {
            "id": key,
            "comparison": value.get("comparison"),
            "estimate": value.get("estimate"),
            "low": value.get("low"),
            "high": value.get("high"),
            "level": value.get("level"),
            "status": value.get("status"),
        }
        for key, value in primary.items()
        if isinstance(value, dict)
    ]


def _checks(checks: Any) -> list[dict[str, Any]]:
    if not isinstance(checks, dict):
        return []
    return [
        {"id": key, "status": value.get("status") if isinstance(value, dict) else value}
        for key, value in checks.items()
    ]


def report_summary(root: Path | None, name: str) -> dict[str, Any]:
    """The summary of report `name` (a directory listed by `list_reports`)."""
    # Only a direct child directory by name: never a path (`..`, `a/b`), and only that one report is read.
    children = {p.name: p for p in root.iterdir() if p.is_dir()} if root is not None and root.is_dir() else {}
    found = _read(children[name]) if name in children else None
    entry, verdict = found if found is not None else ({}, None)
    if root is None or verdict is None:
        raise UnknownReport(f"no experiment report {name!r}" + ("" if root is None else f" under {root}"))
    curves = verdict.get("curves") if entry["kind"] == "proof" else None
    exam: dict[str, Any] = verdict["verdict"] if isinstance(verdict.get("verdict"), dict) else {}
    if isinstance(verdict.get("cohorts"), list):
        cohorts = _cohort_rows(verdict["cohorts"])
    else:
        cohorts = _exam_cohorts(exam.get("cohorts") or {})
    summary: dict[str, Any] = json_ready(
        {
            **entry,
            "settings": verdict.get("settings") or verdict.get("plan"),
            "cohorts": cohorts,
            "comparisons": _comparisons(verdict.get("primary")) + _exam_criteria(exam.get("criteria") or {}),
            "checks": _checks(verdict.get("checks")),
            "flops_curves": flops_curves(curves) if isinstance(curves, dict) else None,
            "provenance": verdict.get("provenance"),
        }
    )
    return summary
