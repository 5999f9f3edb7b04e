"""The experiment's report: ID/OOD tables (mean and spread over seeds), JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["summarize", "write_report"]

PRETRAINED = "pre-trained, not fine-tuned (source head)"
# A difference of two rows' means is reported as beyond the seed noise when it is more
# than twice its standard error, sqrt(s_a^2 / n_a + s_b^2 / n_b) (about p < 0.05).
NOISE_FACTOR = 2.0


def _stats(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "values": [float(v) for v in array],
    }


def _short(name: str) -> str:
    """A set's name in the tables: ``digit_renditions/hand`` -> ``hand``."""
    return name.removeprefix("digit_renditions/")


def _groups(ood_sets: list[str]) -> dict[str, list[str]]:
    groups = {"OOD avg": list(ood_sets)}
    domain = [s for s in ood_sets if "_corrupted/" not in s]
    if domain and len(domain) < len(ood_sets):
        groups["domain shift"] = domain
    for prefix in sorted({s.split("/")[0] for s in ood_sets if "_corrupted/" in s}):
        groups[f"{prefix} avg"] = [s for s in ood_sets if s.startswith(prefix + "/")]
    return groups


def _regimes(results: dict[str, Any]) -> list[int]:
    return list(dict.fromkeys(run.get("regime", 0) for run in results["runs"]))


def _difference(row: dict[str, Any], reference: dict[str, Any], key: str) -> dict[str, Any]:
    """``row[key]`` minus ``reference[key]`` (means) and whether it exceeds the seed noise."""
    a, b = row[key], reference[key]
    n_a, n_b = len(a["values"]), len(b["values"])
    difference = a["mean"] - b["mean"]
    if n_a < 2 or n_b < 2:
        return {"mean": difference, "stderr": None, "beyond_noise": None}
    stderr = float(np.sqrt(a["std"] ** 2 / n_a + b["std"] ** 2 / n_b))
    return {
        "mean": difference,
        "stderr": stderr,
        "beyond_noise": bool(abs(difference) > NOISE_FACTOR * stderr),
    }


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (regime, method): ID test, OOD average and groups, each set, tuning
    cost and training speed; mean/std over seeds.

    Only the runs a row reports (``selected``) enter its numbers; a tuned row's
    ``settings_tried`` and ``training_runs`` count every run it needed.
    """
    config = results["config"]
    groups = _groups(results["ood_sets"])
    grids = {row["label"]: row.get("grid") or () for row in config["methods"]}
    reference_label = config.get("speed_reference", "vanilla (SGD)")
    rows = []
    for regime in _regimes(results):
        regime_runs = [r for r in results["runs"] if r.get("regime", 0) == regime]
        labels = list(dict.fromkeys(r["label"] for r in regime_runs if r.get("selected", True)))
        regime_rows = []
        for label in labels:
            every = [r for r in regime_runs if r["label"] == label]
            runs = [r for r in every if r.get("selected", True)]
            accuracy = lambda run, name: run["tests"][name]["accuracy"]  # noqa: E731
            row = {
                "label": label,
                "regime": regime,
                "seeds": [r["seed"] for r in runs],
                "ID": _stats([accuracy(r, results["id_test"]) for r in runs]),
                "best_epoch": [r["best_epoch"] for r in runs],
                "setting": runs[0].get("setting", {}),
                "settings_tried": max(len(grids.get(label, ())), 1),
                "training_runs": len(every),
            }
            if "wise_ft_alpha" in runs[0]:
                row["wise_ft_alpha"] = runs[0]["wise_ft_alpha"]
                row["wise_ft_source"] = runs[0]["wise_ft_source"]
            elif "wise_ft_source" in runs[0]:  # WiSE-FT with alpha chosen on validation
                row["wise_ft_source"] = runs[0]["wise_ft_source"]
                row["settings_tried"] = len(config["wise_ft_alphas"])
                row["training_runs"] = 0
            for group, names in groups.items():
                row[group] = _stats([np.mean([accuracy(r, n) for n in names]) for r in runs])
            row["per_set"] = {
                n: _stats([accuracy(r, n) for r in runs]) for n in results["ood_sets"]
            }
            speeds = [r["speed"] for r in runs if r.get("speed") and r["speed"]["steps"]]
            if speeds and "wise_ft_source" not in row:
                row["steps_per_s"] = _stats([1.0 / s["median_step_seconds"] for s in speeds])
            regime_rows.append(row)
        reference = next((r for r in regime_rows if r["label"] == reference_label), None)
        for row in regime_rows:
            if reference is None:
                continue
            if "steps_per_s" in row and "steps_per_s" in reference:
                row["speed_vs_reference"] = (
                    row["steps_per_s"]["mean"] / reference["steps_per_s"]["mean"]
                )
            if row is not reference:
                row["vs_reference"] = {
                    key: _difference(row, reference, key) for key in ("ID", "OOD avg")
                }
        rows += regime_rows
    return rows


def _cell(stats: dict[str, Any]) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def _delta(row: dict[str, Any], key: str) -> str:
    difference = row.get("vs_reference", {}).get(key)
    if difference is None:
        return ""
    mark = "**" if difference["beyond_noise"] else ""
    return f"{mark}{100 * difference['mean']:+.1f}{mark}"


def _setting(row: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value:g}" for name, value in row.get("setting", {}).items())


def _main_rows(rows: list[dict[str, Any]], wise_tuned: bool) -> list[dict[str, Any]]:
    """The rows of the main table: the WiSE-FT sweep goes to its own table when tuned."""
    return [row for row in rows if not (wise_tuned and "wise_ft_alpha" in row)]


def _markdown(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    config = results["config"]
    groups = list(_groups(results["ood_sets"]))
    per_set_columns = len(results["ood_sets"]) <= 6
    tuned = any(row.get("grid") for row in config["methods"]) or config.get("wise_ft_tune")
    speeds = any("steps_per_s" in row for row in rows)
    wise_tuned = bool(config.get("wise_ft_tune"))
    pretrain = config["pretrain_dataset"]
    pretrain = [pretrain] if isinstance(pretrain, str) else list(pretrain)
    regimes = _regimes(results)
    examples = results["id_train_examples"]
    if not isinstance(examples, dict):  # results of one regime, before regimes existed
        examples = {str(regimes[0]): examples}
    seeds = rows[0]["seeds"] if rows else []
    lines = ["# Robust fine-tuning: ID vs OOD accuracy", ""]
    if config.get("smoke_test"):
        lines += [
            "> **A smoke test (`--quick`): these accuracies mean nothing.** One seed, two "
            "epochs, a pre-training of one epoch on a few hundred images and grids cut to one "
            "value: it checks that every stage runs and writes its report, not what any "
            "method does. The full run (the command without `--quick`) is the experiment.",
            "",
        ]
    lines += [
        f"Pre-trained on {', '.join(f'`{_short(p)}`' for p in pretrain)} (train split"
        f"{'s' if len(pretrain) > 1 else ''}), fine-tuned on `{_short(config['id_dataset'])}` "
        "train with a new head (unless the row says otherwise), best epoch selected on "
        f"`{_short(config['id_dataset'])}` validation. Accuracy in %, mean ± std over seeds "
        f"{seeds}. ID = `{_short(results['id_test'])}` test; OOD avg = mean over the "
        f"{len(results['ood_sets'])} OOD test sets.",
    ]
    if tuned:
        lines += [
            "",
            "Tuning: a row with a `chosen` value tried each value of its grid on seed(s) "
            f"{', '.join(map(str, config.get('tune_seeds', [0])))} and kept the best by "
            f"`{_short(config['id_dataset'])}` validation accuracy; "
            "`settings` counts the values tried, `runs` the training runs the row needed "
            "(WiSE-FT: alphas evaluated, no training of its own).",
        ]
    if speeds:
        lines += [
            "",
            "Speed: training steps per second of the row's runs, from the median step time "
            "of each run (a step: the forward and backward pass, the optimizer step and "
            "TPGM's projection update, each step waited for; compilation, evaluation and "
            "checkpoints excluded), "
            f"and relative to `{config.get('speed_reference')}` in the same run. "
            "Δ: difference of means from "
            f"`{config.get('speed_reference')}`, in **bold** when larger than "
            f"{NOISE_FACTOR:g} standard errors of the difference (the seed noise).",
        ]
    notes = config.get("protocol_notes") or ()
    if notes:
        lines += ["", "## Protocol, and where it departs from the reference's", ""]
        lines += [f"- {note}" for note in notes]
    pre = results["pretrained"]["tests"]
    for regime in regimes:
        regime_rows = _main_rows([r for r in rows if r["regime"] == regime], wise_tuned)
        columns = ["method"]
        if tuned:
            columns += ["settings", "runs", "chosen"]
        columns += ["ID", *groups]
        if speeds:
            columns += ["Δ ID", "Δ OOD avg"]
        if per_set_columns:
            columns += [f"`{_short(n)}`" for n in results["ood_sets"]]
        if speeds:
            columns += ["steps/s", "speed vs vanilla"]
        count = examples.get(str(regime), examples.get(regime))
        lines += [
            "",
            f"## {regime}% of `{_short(config['id_dataset'])}` train ({count} examples)"
            if len(regimes) > 1
            else f"{regime}% of `{_short(config['id_dataset'])}` train ({count} examples).",
            "",
            "| " + " | ".join(columns) + " |",
            "|---" * len(columns) + "|",
        ]
        cells = [PRETRAINED] + (["", "", ""] if tuned else [])
        cells.append(f"{100 * pre[results['id_test']]['accuracy']:.1f}")
        for names in _groups(results["ood_sets"]).values():
            cells.append(f"{100 * np.mean([pre[n]['accuracy'] for n in names]):.1f}")
        if speeds:
            cells += ["", ""]
        if per_set_columns:
            cells += [f"{100 * pre[n]['accuracy']:.1f}" for n in results["ood_sets"]]
        if speeds:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
        for row in regime_rows:
            cells = [row["label"]]
            if tuned:
                cells += [str(row["settings_tried"]), str(row["training_runs"]), _setting(row)]
            cells += [_cell(row["ID"])] + [_cell(row[g]) for g in groups]
            if speeds:
                cells += [_delta(row, "ID"), _delta(row, "OOD avg")]
            if per_set_columns:
                cells += [_cell(row["per_set"][n]) for n in results["ood_sets"]]
            if speeds:
                if "steps_per_s" in row:
                    cells += [
                        f"{row['steps_per_s']['mean']:.1f}",
                        f"{row.get('speed_vs_reference', float('nan')):.2f}x",
                    ]
                else:
                    cells += ["", "its source's" if "wise_ft_source" in row else ""]
            lines.append("| " + " | ".join(cells) + " |")
    if not per_set_columns:
        lines += [
            "",
            "## Every OOD set",
            "",
            "| method | " + " | ".join(f"`{_short(n)}`" for n in results["ood_sets"]) + " |",
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
        sources = list(dict.fromkeys(row["wise_ft_source"] for row in wise))
        lines += [
            "",
            "WiSE-FT α=a: the weights (1 - a) · pre-trained + a · fine-tuned, of each seed's "
            f"{' / '.join(f'`{s}`' for s in sources)} model (its selected epoch); a new head "
            "has no pre-trained value and keeps its fine-tuned weights, a pre-trained head is "
            "interpolated too. α=1 is the source itself; α=0 is the pre-trained backbone "
            "(under the fine-tuned new head, or the pre-trained model itself).",
        ]
        if wise_tuned:
            lines += [
                "",
                "## WiSE-FT sweeps",
                "",
                "| regime | source | α | ID | OOD avg | validation |",
                "|---|---|---|---|---|---|",
            ]
            for row in wise:
                runs = [
                    r
                    for r in results["runs"]
                    if r["label"] == row["label"] and r.get("regime", 0) == row["regime"]
                ]
                validation = _stats([r["validation"]["accuracy"] for r in runs])
                lines.append(
                    f"| {row['regime']}% | {row['wise_ft_source']} | {row['wise_ft_alpha']:g} | "
                    f"{_cell(row['ID'])} | {_cell(row['OOD avg'])} | {_cell(validation)} |"
                )
    trials = [r for r in results["runs"] if r.get("setting") and "selected" in r]
    if trials and tuned:
        tune_seeds = config.get("tune_seeds", [0])
        lines += [
            "",
            "## Tuning runs (seed(s) " + ", ".join(map(str, tune_seeds)) + ")",
            "",
            "| regime | method | setting | validation | ID | OOD avg | chosen |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in trials:
            if run["seed"] not in tune_seeds:
                continue
            ood = np.mean([run["tests"][n]["accuracy"] for n in results["ood_sets"]])
            setting = ", ".join(f"{k}={v:g}" for k, v in run["setting"].items())
            lines.append(
                f"| {run['regime']}% | {run['label']} | {setting} | "
                f"{100 * run['validation']['accuracy']:.1f} | "
                f"{100 * run['tests'][results['id_test']]['accuracy']:.1f} | {100 * ood:.1f} | "
                f"{'yes' if run['selected'] else ''} |"
            )
    pinned = [r for r in results["runs"] if r.get("pinned") and r.get("selected", True)]
    lines += ["", "## Pinned leaves", ""]
    if pinned:
        lines += [
            "Leaves whose learned radius sat at its floor (FTP: 1e-8) at the end of at least "
            "half the epochs: held at their pre-trained values (`fit` warned for each run).",
            "",
            "| regime | method | seed | pinned leaves (from step) |",
            "|---|---|---|---|",
        ]
        for run in pinned:
            setting = "".join(f" {k}={v:g}" for k, v in run.get("setting", {}).items())
            leaves = ", ".join(f"{leaf} ({step})" for leaf, step in run["pinned"].items())
            lines.append(
                f"| {run['regime']}% | {run['label']}{setting} | {run['seed']} | {leaves} |"
            )
    else:
        lines.append("No reported run had a leaf pinned at its radius floor.")
    timings = results.get("timings")
    if timings:
        lines += [
            "",
            "Time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ".",
        ]
    total = f"Total time: {results['seconds']:.0f} s."
    if results.get("rerun_seconds"):  # a rerun of a finished experiment keeps the first time
        total += f" (Rerun, reusing the finished runs: {results['rerun_seconds'][-1]:.0f} s.)"
    lines += ["", total, ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _regime_axes(plt, count: int, width: float, height: float):
    figure, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return figure, list(axes[0])


def _plot_id_vs_ood(results: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    plt = _pyplot()
    regimes = _regimes(results)
    figure, axes = _regime_axes(plt, len(regimes), 7, 5.5)
    pre = results["pretrained"]["tests"]
    for axis, regime in zip(axes, regimes, strict=True):
        regime_rows = [row for row in rows if row["regime"] == regime]
        wise = [row for row in regime_rows if "wise_ft_alpha" in row]
        for source in dict.fromkeys(row["wise_ft_source"] for row in wise):
            curve = sorted(
                (row for row in wise if row["wise_ft_source"] == source),
                key=lambda row: row["wise_ft_alpha"],
            )
            xs = [100 * row["ID"]["mean"] for row in curve]
            ys = [100 * row["OOD avg"]["mean"] for row in curve]
            (line,) = axis.plot(
                xs, ys, ":", marker=".", alpha=0.7, label=f"WiSE-FT of {source}, α = 0 ... 1"
            )
            for row, x, y in zip(curve, xs, ys, strict=True):
                axis.annotate(
                    f"α={row['wise_ft_alpha']:g}", (x, y), fontsize=6, color=line.get_color()
                )
        ood = np.mean([pre[n]["accuracy"] for n in results["ood_sets"]])
        axis.plot(
            100 * pre[results["id_test"]]["accuracy"],
            100 * ood,
            "k*",
            markersize=10,
            label="pre-trained (source head)",
        )
        markers = "osD^vP<>Xhp8"
        for index, row in enumerate(r for r in regime_rows if "wise_ft_alpha" not in r):
            axis.errorbar(
                100 * row["ID"]["mean"],
                100 * row["OOD avg"]["mean"],
                xerr=100 * row["ID"]["std"],
                yerr=100 * row["OOD avg"]["std"],
                fmt=markers[index % len(markers)],
                capsize=3,
                label=row["label"],
            )
        axis.set_xlabel("ID test accuracy (%)")
        axis.set_ylabel(f"OOD average accuracy (%, {len(results['ood_sets'])} sets)")
        title = "ID vs OOD (mean ± std over seeds)"
        axis.set_title(f"{regime}% of the ID train split: {title}" if len(regimes) > 1 else title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_per_set(results: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: accuracy on the ID test set and each OOD set, per row."""
    plt = _pyplot()
    regimes = _regimes(results)
    figure, axes = plt.subplots(len(regimes), 1, figsize=(14, 4.2 * len(regimes)), squeeze=False)
    axes = axes[:, 0]
    names = [results["id_test"], *results["ood_sets"]]
    pre = results["pretrained"]["tests"]
    for axis, regime in zip(axes, regimes, strict=True):
        bars = [("pre-trained (source head)", [pre[n]["accuracy"] for n in names], None)]
        for row in rows:
            if row["regime"] != regime or "wise_ft_alpha" in row:
                continue
            means = [row["ID"]["mean"]] + [row["per_set"][n]["mean"] for n in names[1:]]
            stds = [row["ID"]["std"]] + [row["per_set"][n]["std"] for n in names[1:]]
            bars.append((row["label"], means, stds))
        width = 0.85 / len(bars)
        colors = plt.get_cmap("tab20").colors
        for index, (label, means, stds) in enumerate(bars):
            xs = np.arange(len(names)) + (index - (len(bars) - 1) / 2) * width
            axis.bar(
                xs,
                100 * np.asarray(means),
                width,
                yerr=None if stds is None else 100 * np.asarray(stds),
                label=label,
                color="black" if index == 0 else colors[(index - 1) % len(colors)],
                error_kw={"elinewidth": 0.6},
            )
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels([f"{_short(n)} (ID)" if n == names[0] else _short(n) for n in names])
        axis.set_ylabel("test accuracy (%)")
        axis.set_ylim(0, 100)
        axis.set_title(f"{regime}% of the ID train split: accuracy per test set")
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=6, ncol=4, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_ood_vs_speed(results: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> bool:
    timed = [row for row in rows if "speed_vs_reference" in row]
    if not timed:
        return False
    plt = _pyplot()
    regimes = [r for r in _regimes(results) if any(row["regime"] == r for row in timed)]
    figure, axes = _regime_axes(plt, len(regimes), 6.5, 5)
    for axis, regime in zip(axes, regimes, strict=True):
        for row in (row for row in timed if row["regime"] == regime):
            x, y = row["speed_vs_reference"], 100 * row["OOD avg"]["mean"]
            axis.errorbar(x, y, yerr=100 * row["OOD avg"]["std"], fmt="o", capsize=3)
            axis.annotate(
                row["label"], (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points"
            )
        axis.set_xlabel(f"training steps/s relative to {results['config']['speed_reference']}")
        axis.set_ylabel("OOD average accuracy (%)")
        axis.set_title(f"{regime}% of the ID train split: OOD accuracy vs speed")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _plot_radii(results: dict[str, Any], path: Path) -> bool:
    """Per-layer radius (methods that learn radii) and distance from the pre-trained
    weights, over training, for each reported row's first seed."""
    plt = _pyplot()
    first_seed = results["runs"][0]["seed"]
    curves = {}
    multi = len(_regimes(results)) > 1
    for run in results["runs"]:
        if run["seed"] != first_seed or not run.get("selected", True):
            continue
        history = run["history"]
        if history and history[-1].get("radius"):
            setting = "".join(f" {k}={v:g}" for k, v in run.get("setting", {}).items())
            name = f"{run['label']}{setting}" + (f", {run['regime']}%" if multi else "")
            curves[name] = history
    if not curves:
        return False
    figure, axes = plt.subplots(len(curves), 2, figsize=(10, 3.2 * len(curves)), squeeze=False)
    for (label, history), (left, right) in zip(curves.items(), axes, strict=True):
        epochs = [record["epoch"] for record in history]
        marker = "." if len(epochs) < 6 else None
        for leaf in history[-1]["radius"]:
            values = [record["radius"].get(leaf, np.nan) for record in history]
            left.plot(epochs, np.maximum(values, 1e-9), marker=marker, label=leaf)
            distances = [record["distance"].get(leaf, np.nan) for record in history]
            right.plot(epochs, distances, marker=marker, label=leaf)
        left.set_yscale("log")
        left.set_title(f"{label}: radius per layer (seed {first_seed})", fontsize=8)
        left.set_ylabel("radius (MARS norm)")
        right.set_title(f"{label}: L2 distance from pre-trained", fontsize=8)
        for axis in (left, right):
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
        left.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _plot_samples(samples: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Two examples of every class from each test set, one set per pair of rows."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(samples), 1, figsize=(8, 1.75 * len(samples)), squeeze=False)
    for axis, (name, (images, labels)) in zip(axes[:, 0], samples.items(), strict=True):
        picks = [np.flatnonzero(labels == c)[k] for k in range(2) for c in range(10)]
        tiles = images[picks]
        if tiles.shape[-1] == 1:
            tiles = np.repeat(tiles, 3, axis=-1)
        strip = np.concatenate(
            [np.concatenate(list(tiles[k * 10 : (k + 1) * 10]), axis=1) for k in range(2)],
            axis=0,
        )
        axis.imshow(np.clip(strip, 0.0, 1.0), interpolation="nearest")
        axis.set_title(_short(name), fontsize=9, loc="left")
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(
    results: dict[str, Any],
    results_dir: Path,
    samples: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Writes ``results.json``, ``results.md`` and the plots.

    Plots: ``id_vs_ood.png`` (WiSE-FT as curves), ``per_set.png`` (accuracy per
    test set), ``ood_vs_speed.png`` (OOD average vs training speed, when runs
    were timed), ``radii.png`` (radius per layer over training) and, given
    ``samples`` (``{set name: (images in [0, 1], labels)}``), ``samples.png``.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    (results_dir / "results.json").write_text(json.dumps({**results, "summary": rows}, indent=1))
    (results_dir / "results.md").write_text(_markdown(results, rows))
    _plot_id_vs_ood(results, rows, results_dir / "id_vs_ood.png")
    _plot_per_set(results, rows, results_dir / "per_set.png")
    _plot_ood_vs_speed(results, rows, results_dir / "ood_vs_speed.png")
    _plot_radii(results, results_dir / "radii.png")
    if samples:
        _plot_samples(samples, results_dir / "samples.png")
