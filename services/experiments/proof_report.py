"""What `esper experiment proof` writes: verdict.json, report.md, curves_flops.png and params.png."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.experiments.plots import pyplot
from services.experiments.proof_analysis import STATIC_INITIAL, Judgement, PairRow
from services.experiments.provenance import provenance_markdown
from services.experiments.statistics import bootstrap_interval


def cohort_table(rows: Sequence[PairRow], cohorts: Sequence[str]) -> list[dict[str, Any]]:
    """Per cohort: final accuracy [95 % CI over pairs], Δ vs static-initial, params, parameter-epochs, FLOPs."""
    by = defaultdict(list)
    for row in rows:
        by[row.cohort].append(row)
    base = {row.pair: row.final_accuracy for row in by[STATIC_INITIAL]}
    table = []
    for cohort in cohorts:
        members = by.get(cohort, [])
        if not members:
            table.append({"cohort": cohort, "pairs": 0})
            continue
        deltas = [r.final_accuracy - base[r.pair] for r in members if r.pair in base]
        added = [r.seed_params_added for r in members]
        rois = [1000 * d / a for d, a in zip(deltas, added, strict=False) if a]
        table.append(
            {
                "cohort": cohort,
                "pairs": len(members),
                "final_accuracy": bootstrap_interval([r.final_accuracy for r in members]).as_dict(),
                "delta_vs_static_initial": bootstrap_interval(deltas).as_dict() if deltas else None,
                "seed_params_added": statistics.fmean(added),
                "committed_params": statistics.fmean(r.committed_params for r in members),
                "dead_params": statistics.fmean(r.dead_params for r in members),
                "roi_per_1k_params": statistics.fmean(rois) if rois else None,
                "parameter_epochs": statistics.fmean(r.parameter_epochs for r in members),
                "train_gflops": statistics.fmean(r.train_flops for r in members) / 1e9,
                "rollbacks": sum(r.rollbacks for r in members),
                "germinated_fossilized_pruned": [
                    sum(getattr(r, k) for r in members) for k in ("germinated", "fossilized", "pruned")
                ],
                "flags": sorted({f for r in members for f in r.flags}),
            }
        )
    return table


def _mean_curves(rows: Sequence[PairRow], cohorts: Sequence[str], value: str) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    for cohort in cohorts:
        members = [r for r in rows if r.cohort == cohort and r.curve]
        if not members:
            continue
        length = min(len(r.curve) for r in members)
        points = []
        for i in range(length):
            if value == "flops":
                x = statistics.fmean(r.cumulative_curve()[i][0] for r in members) / 1e9
                y = statistics.fmean(r.curve[i].accuracy for r in members)
            else:
                x, y = float(i + 1), statistics.fmean(r.curve[i].params_in_forward for r in members)
            points.append((x, y))
        curves[cohort] = points
    return curves


def write_plots(rows: Sequence[PairRow], cohorts: Sequence[str], out: Path) -> list[str]:
    plt = pyplot()
    written = []
    for name, title, value, xlabel, ylabel, log in (
        (
            "curves_flops.png",
            "accuracy against training compute",
            "flops",
            "cumulative training GFLOPs",
            "validation accuracy (%)",
            True,
        ),
        (
            "params.png",
            "the grown architecture over epochs",
            "params",
            "epoch",
            "parameters in forward (mean over pairs)",
            False,
        ),
    ):
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for cohort, points in _mean_curves(rows, cohorts, value).items():
            axis.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=cohort)
        if log:
            axis.set_xscale("log")
        axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        written.append(name)
    return written


def _fmt(interval: dict[str, Any] | None, digits: int = 2) -> str:
    if not interval or interval.get("mean") is None:
        return "—"
    return f"{interval['mean']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def _num(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def report_markdown(
    result: dict[str, Any], table: list[dict[str, Any]], judgement: Judgement, info: dict[str, str]
) -> str:
    s = result["settings"]
    rehearsal = (
        " Fewer than 5 replicates is a REHEARSAL: every number is printed, no verdict." if s["replicates"] < 5 else ""
    )
    lines = [
        f"# Proof of growth on {s['task']}: {judgement.verdict}",
        "",
        f"{s['replicates']} replicate(s) × {s['eval_episodes']} held-out pairs; treatment = a PPO line trained on "
        f"{s['episodes']} episodes ({s['envs']} envs per round, reward {s['reward_mode']}); wall "
        f"{result['wall_seconds']} s.{rehearsal}",
        "",
        "## Integrity checks",
        "",
        *[
            f"- [{'x' if c['passed'] else ' '}] {c['check']} ({c['kind']}){': ' + c['detail'] if c['detail'] else ''}"
            for c in judgement.checks
        ],
        "",
        "## Cohorts",
        "",
        "| cohort | pairs | final acc % [95% CI] | Δ vs static-initial [95% CI] | seed params added | committed params "
        "| ROI /1k params | parameter-epochs | train GFLOPs | rollbacks | germ:foss:pruned | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        if not row["pairs"]:
            lines.append(f"| {row['cohort']} | 0 | — | — | — | — | — | — | — | — | — | missing |")
            continue
        g = ":".join(str(v) for v in row["germinated_fossilized_pruned"])
        lines.append(
            f"| {row['cohort']} | {row['pairs']} | {_fmt(row['final_accuracy'])} "
            f"| {_fmt(row['delta_vs_static_initial'])} "
            f"| {row['seed_params_added']:.0f} | {row['committed_params']:.0f} | {_num(row['roi_per_1k_params'], 2)} "
            f"| {row['parameter_epochs']:.0f} | {row['train_gflops']:.3f} | {row['rollbacks']} | {g} "
            f"| {', '.join(row['flags'])} |"
        )
    lines += [
        "",
        "## Primary comparisons (98.75 % intervals: Bonferroni over 4)",
        "",
        "| id | comparison | estimate | interval | status | minimum detectable effect |",
        "|---|---|---|---|---|---|",
    ]
    for key, c in sorted(judgement.primary.items()):
        lines.append(
            f"| {key} | {c['comparison']} | {_num(c.get('estimate'))} | [{_num(c.get('low'))}, {_num(c.get('high'))}] "
            f"| {c['status']} | {_num(c.get('minimum_detectable_effect'))} |"
        )
    lines += [
        "",
        "## Secondary comparisons (95 %)",
        "",
        "| comparison | estimate | interval | status |",
        "|---|---|---|---|",
    ]
    for key, c in judgement.secondary.items():
        lines.append(
            f"| {key} | {_num(c.get('estimate'))} | [{_num(c.get('low'))}, {_num(c.get('high'))}] | {c['status']} |"
        )
    if judgement.compute_to_target:
        reached = [r for r in judgement.compute_to_target if r["reached"]]
        lines += [
            "",
            "## Compute to target (treatment FLOPs / static-final FLOPs to static-final's final accuracy)",
            "",
            f"{len(reached)} of {len(judgement.compute_to_target)} pairs reached; ratios: "
            + ", ".join("∞" if r["ratio"] is None else f"{r['ratio']:.2f}" for r in judgement.compute_to_target),
        ]
    lines += [
        "",
        "![accuracy against training FLOPs](curves_flops.png)",
        "",
        "![parameters in forward](params.png)",
        "",
        provenance_markdown(info),
        "",
    ]
    return "\n".join(lines)


def write_report(result: dict[str, Any], cohorts: Sequence[str], out: Path, info: dict[str, str]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    judgement: Judgement = result["judgement"]
    rows: list[PairRow] = result["rows"]
    table = cohort_table(rows, cohorts)
    plots = write_plots(rows, cohorts, out)
    verdict = {
        "verdict": judgement.verdict,
        "settings": result["settings"],
        "provenance": info,
        "cohorts": table,
        "primary": judgement.primary,
        "secondary": judgement.secondary,
        "checks": judgement.checks,
        "blockers": [asdict(b) for b in judgement.blockers],
        "compute_to_target": judgement.compute_to_target,
        "pairs": [{k: v for k, v in asdict(r).items() if k != "curve"} for r in rows],
        "curves": {f"{r.cohort}/{r.replicate}/{r.env}": [asdict(p) for p in r.curve] for r in rows},
        "training": [rep["training"] for rep in result["replicates"]],
        "plots": plots,
        "wall_seconds": result["wall_seconds"],
    }
    (out / "verdict.json").write_text(json.dumps(verdict, indent=1) + "\n")
    (out / "report.md").write_text(report_markdown(result, table, judgement, info))
    return verdict
