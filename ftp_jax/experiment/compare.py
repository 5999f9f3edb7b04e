"""Two runs of one experiment side by side: does a change (e.g. bfloat16 compute) move
any row's accuracy beyond the seed noise?

``python -m ftp_jax.experiment.compare REFERENCE/results.json OTHER/results.json
--out DIR [--names float32 bfloat16]`` writes ``DIR/compare.md`` and ``DIR/compare.json``:
for every (regime, row) of both, the ID and OOD-average accuracy of each (mean ±
std over seeds), their difference, and whether it exceeds the report's noise test
(:data:`ftp_jax.experiment.report.NOISE_FACTOR` standard errors of the difference,
the test the main table's Δ columns use).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ftp_jax.experiment.report import NOISE_FACTOR, _difference, summarize

__all__ = ["compare", "compare_markdown", "main"]

KEYS = ("ID", "OOD avg")
# Tuned settings as results.json files named them before each method had its own
# options dataclass (the settings are the same: only the names changed).
FORMER_SETTING_NAMES = {"l2sp_alpha": "alpha", "pgm_radius": "radius", "spd_strength": "strength"}


def _current_names(setting: dict[str, Any]) -> dict[str, Any]:
    return {FORMER_SETTING_NAMES.get(name, name): value for name, value in setting.items()}


def compare(reference: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (regime, label) in both results: each one's ID and OOD-average
    stats (fractions) and ``other - reference`` with its standard error.

    Tuned settings are compared by their current names (results written before the
    per-method options say ``l2sp_alpha``, ``pgm_radius``, ``spd_strength``).

    Raises:
      ValueError: the two results share no row (not runs of one experiment).
    """
    rows = {(r["regime"], r["label"]): r for r in summarize(reference)}
    records = []
    for row in summarize(other):
        base = rows.get((row["regime"], row["label"]))
        if base is None:
            continue
        records.append(
            {
                "regime": row["regime"],
                "label": row["label"],
                "reference": {
                    "setting": _current_names(base["setting"]),
                    **{key: base[key] for key in KEYS},
                },
                "other": {
                    "setting": _current_names(row["setting"]),
                    **{key: row[key] for key in KEYS},
                },
                "difference": {key: _noise_test(row, base, key) for key in KEYS},
            }
        )
    if not records:
        raise ValueError(
            "the two results share no (regime, row): compare two runs of one experiment "
            "config (e.g. the same config with and without --set finetune.compute_dtype=...)."
        )
    return records


def _noise_test(row: dict[str, Any], base: dict[str, Any], key: str) -> dict[str, Any]:
    """The report's difference test; no verdict where the seeds do not vary (a row of one
    model, e.g. the pre-trained one: its standard error is 0, any change is "beyond")."""
    difference = _difference(row, base, key)
    if difference["stderr"] is not None and difference["stderr"] < 1e-9:  # rounding: ~1e-17
        difference["beyond_noise"] = None
    return difference


def _setting(setting: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value:g}" for name, value in setting.items())


def compare_markdown(records: list[dict[str, Any]], names: tuple[str, str]) -> str:
    """The records as one markdown table per regime (accuracy in %)."""
    cell = lambda s: f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"  # noqa: E731

    def delta(difference):
        text = f"{100 * difference['mean']:+.1f}"
        if difference["stderr"] is not None:
            text += f" (SE {100 * difference['stderr']:.1f})"
        return f"**{text}**" if difference["beyond_noise"] else text

    tested = [r["difference"][k] for r in records for k in KEYS]
    tested = [d for d in tested if d["beyond_noise"] is not None]
    beyond = sum(d["beyond_noise"] for d in tested)
    same = [r for r in records if r["reference"]["setting"] == r["other"]["setting"]]
    same_tested = [r["difference"][k] for r in same for k in KEYS]
    same_tested = [d for d in same_tested if d["beyond_noise"] is not None]
    lines = [
        f"# {names[1]} vs {names[0]}",
        "",
        f"Accuracy in %, mean ± std over seeds; Δ = {names[1]} − {names[0]} with its "
        f"standard error (SE), in **bold** when beyond {NOISE_FACTOR:g} SE (the seed noise; "
        "no verdict for a row whose seeds do not vary: SE 0). "
        f"{beyond} of {len(tested)} differences are beyond it; "
        f"{sum(d['beyond_noise'] for d in same_tested)} of {len(same_tested)} among the rows "
        "that ran the same setting in both (a tuned row may choose another value of its "
        "grid: `setting` differs).",
    ]
    for regime in dict.fromkeys(r["regime"] for r in records):
        lines += [
            "",
            f"## {regime}% of the fine-tuning split",
            "",
            f"| row | setting {names[0]} | setting {names[1]} | ID {names[0]} | ID {names[1]} | "
            f"Δ ID | OOD avg {names[0]} | OOD avg {names[1]} | Δ OOD avg |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in records if r["regime"] == regime):
            cells = [r["label"], _setting(r["reference"]["setting"])]
            cells.append(_setting(r["other"]["setting"]))
            for key in KEYS:
                cells += [cell(r["reference"][key]), cell(r["other"][key])]
                cells.append(delta(r["difference"][key]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="the reference run's results.json")
    parser.add_argument("other", help="the other run's results.json")
    parser.add_argument("--out", required=True, help="directory for compare.md and .json")
    parser.add_argument("--names", nargs=2, default=("reference", "other"))
    args = parser.parse_args(argv)
    load = lambda path: json.loads(Path(path).read_text())  # noqa: E731
    records = compare(load(args.reference), load(args.other))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(records, indent=1))
    markdown = compare_markdown(records, tuple(args.names))
    (out / "compare.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
