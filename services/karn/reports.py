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


def list_reports(root: Path | None) -> list[dict[str, Any]]:
    """Every report directory directly under `root`, by name; empty when there is no root."""
    if root is None or not root.is_dir():
        return []
    found: list[dict[str, Any]] = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        verdict_file = _verdict_file(directory)
        if verdict_file is None:
            continue
        try:
            verdict = json.loads(verdict_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            found.append({"name": directory.name, "title": _title(directory), "kind": "unreadable", "error": str(exc)})
            continue
        found.append(
            {
                "name": directory.name,
                "title": _title(directory),
                "kind": _kind(verdict),
                "verdict": verdict.get("verdict") if isinstance(verdict.get("verdict"), str) else None,
            }
        )
    return found


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
    listed = {entry["name"]: entry for entry in list_reports(root)}
    if root is None or name not in listed or listed[name]["kind"] == "unreadable":
        raise UnknownReport(f"no experiment report {name!r}" + ("" if root is None else f" under {root}"))
    directory = root / name
    verdict_file = _verdict_file(directory)
    assert verdict_file is not None
    verdict = json.loads(verdict_file.read_text(encoding="utf-8"))
    curves = verdict.get("curves") if listed[name]["kind"] == "proof" else None
    summary: dict[str, Any] = json_ready(
        {
            **listed[name],
            "settings": verdict.get("settings") or verdict.get("plan"),
            "cohorts": _cohort_rows(verdict["cohorts"]) if isinstance(verdict.get("cohorts"), list) else [],
            "comparisons": _comparisons(verdict.get("primary")),
            "checks": _checks(verdict.get("checks")),
            "flops_curves": flops_curves(curves) if isinstance(curves, dict) else None,
            "provenance": verdict.get("provenance"),
        }
    )
    return summary
