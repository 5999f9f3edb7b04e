"""The experiment's report: ID/OOD table (mean and spread over seeds), JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["summarize", "write_report"]


def _stats(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "values": [float(v) for v in array],
    }


def _groups(ood_sets: list[str]) -> dict[str, list[str]]:
    groups = {"OOD avg": list(ood_sets)}
    domain = [s for s in ood_sets if "_corrupted/" not in s]
    if domain:
        groups["domain shift"] = domain
    for prefix in sorted({s.split("/")[0] for s in ood_sets if "_corrupted/" in s}):
        groups[f"{prefix} avg"] = [s for s in ood_sets if s.startswith(prefix + "/")]
    return groups


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: ID test, OOD average and groups, each set; mean/std over seeds."""
    rows = []
    labels = list(dict.fromkeys(run["label"] for run in results["runs"]))
    groups = _groups(results["ood_sets"])
    for label in labels:
        runs = [r for r in results["runs"] if r["label"] == label]
        accuracy = lambda run, name: run["tests"][name]["accuracy"]  # noqa: E731
        row = {
            "label": label,
            "seeds": [r["seed"] for r in runs],
            "ID": _stats([accuracy(r, results["id_test"]) for r in runs]),
            "best_epoch": [r["best_epoch"] for r in runs],
        }
        if "wise_ft_alpha" in runs[0]:
            row["wise_ft_alpha"] = runs[0]["wise_ft_alpha"]
        for group, names in groups.items():
            row[group] = _stats([np.mean([accuracy(r, n) for n in names]) for r in runs])
        row["per_set"] = {n: _stats([accuracy(r, n) for r in runs]) for n in results["ood_sets"]}
        rows.append(row)
    return rows


def _cell(stats: dict[str, Any]) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def _markdown(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    groups = list(_groups(results["ood_sets"]))
    config = results["config"]
    lines = [
        "# Robust fine-tuning on digits: ID vs OOD accuracy",
        "",
        f"Pre-trained on `{config['pretrain_dataset']}` (train split), fine-tuned on "
        f"{config['id_percent']}% of `{config['id_dataset']}` train "
        f"({results['id_train_examples']} examples) with a new head, "
        f"{config['finetune']['epochs']} epochs, best epoch selected on "
        f"`{config['id_dataset']}` validation. Accuracy in %, mean ± std over seeds "
        f"{rows[0]['seeds'] if rows else []}. ID = `{results['id_test']}` test; OOD avg = "
        f"mean over the {len(results['ood_sets'])} OOD test sets.",
        "",
        "| method | ID | " + " | ".join(groups) + " |",
        "|---" * (2 + len(groups)) + "|",
    ]
    pre = results["pretrained"]["tests"]
    pre_cells = [f"{100 * pre[results['id_test']]['accuracy']:.1f}"]
    for names in _groups(results["ood_sets"]).values():
        pre_cells.append(f"{100 * np.mean([pre[n]['accuracy'] for n in names]):.1f}")
    lines.append("| pre-trained, not fine-tuned (source head) | " + " | ".join(pre_cells) + " |")
    for row in rows:
        lines.append(
            f"| {row['label']} | {_cell(row['ID'])} | "
            + " | ".join(_cell(row[g]) for g in groups)
            + " |"
        )
    lines += [
        "",
        "## Every OOD set",
        "",
        "| method | " + " | ".join(f"`{n}`" for n in results["ood_sets"]) + " |",
        "|---" * (1 + len(results["ood_sets"])) + "|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | "
            + " | ".join(_cell(row["per_set"][n]) for n in results["ood_sets"])
            + " |"
        )
    wise = [row for row in rows if "wise_ft_alpha" in row]
    if wise:
        source = results["config"].get("wise_ft_source", "")
        lines += [
            "",
            f"WiSE-FT α=a: the weights (1 - a) · pre-trained + a · fine-tuned, of each seed's "
            f"`{source}` model (its selected epoch); the new head has no pre-trained value "
            f"and keeps its fine-tuned weights. α=1 is `{source}` itself; α=0 is the "
            "pre-trained backbone under that fine-tuned head.",
        ]
    total = f"Total time: {results['seconds']:.0f} s."
    if results.get("rerun_seconds"):  # a rerun of a finished experiment keeps the first time
        total += f" (Rerun, reusing the finished runs: {results['rerun_seconds'][-1]:.0f} s.)"
    lines += ["", total, ""]
    return "\n".join(lines)


def _plot_id_vs_ood(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 5))
    wise = [row for row in rows if "wise_ft_alpha" in row]
    if wise:  # one curve over alpha, not one legend entry per alpha
        wise.sort(key=lambda row: row["wise_ft_alpha"])
        xs = [100 * row["ID"]["mean"] for row in wise]
        ys = [100 * row["OOD avg"]["mean"] for row in wise]
        label = "WiSE-FT, α = 0 ... 1"
        axis.plot(xs, ys, ":", color="black", marker=".", alpha=0.6, label=label)
        for row, x, y in zip(wise, xs, ys, strict=True):
            axis.annotate(f"α={row['wise_ft_alpha']:g}", (x, y), fontsize=7, alpha=0.6)
    for row in rows:
        if "wise_ft_alpha" in row:
            continue
        axis.errorbar(
            100 * row["ID"]["mean"],
            100 * row["OOD avg"]["mean"],
            xerr=100 * row["ID"]["std"],
            yerr=100 * row["OOD avg"]["std"],
            fmt="o",
            capsize=3,
            label=row["label"],
        )
    axis.set_xlabel("ID test accuracy (%)")
    axis.set_ylabel("OOD average accuracy (%)")
    axis.set_title("ID vs OOD accuracy (mean ± std over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_radii(results: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for run in results["runs"]:
        if run["seed"] != results["runs"][0]["seed"]:
            continue
        history = run["history"]
        if history and history[-1]["radius"]:
            curves[run["label"]] = history
    if not curves:
        return False
    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for axis, (label, history) in zip(axes[0], curves.items(), strict=True):
        epochs = [record["epoch"] for record in history]
        for leaf in history[-1]["radius"]:
            values = [record["radius"].get(leaf, np.nan) for record in history]
            axis.plot(epochs, values, label=leaf)
        axis.set_yscale("log")
        axis.set_title(f"{label}: radius per layer (seed {results['runs'][0]['seed']})")
        axis.set_xlabel("epoch")
        axis.set_ylabel("radius (MARS norm)")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_report(results: dict[str, Any], results_dir: Path) -> None:
    """Writes ``results.json``, ``results.md``, ``id_vs_ood.png`` and ``radii.png``."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    (results_dir / "results.json").write_text(json.dumps({**results, "summary": rows}, indent=1))
    (results_dir / "results.md").write_text(_markdown(results, rows))
    _plot_id_vs_ood(rows, results_dir / "id_vs_ood.png")
    _plot_radii(results, results_dir / "radii.png")
