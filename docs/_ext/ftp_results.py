"""The numbers of the documentation, read from the committed results files at build time.

No number on a results page is typed by hand: the pages name a value as a MyST
substitution, ``{{ p100_ftp_ood }}``, and this module computes every value from
``experiments/results/*`` and ``benchmarks/results/*`` (tables too: a
substitution on a line of its own is a block of Markdown). A page that names a
value this module does not give fails the build (warnings are errors).

Names: ``p<percent>_<row>_<metric>`` for the default experiment's rows (``id``,
``ood``: mean accuracy in %; ``id_std``, ``ood_std``; ``did``, ``dood``: the
difference from vanilla (SGD); ``speed``: steps/s relative to vanilla (SGD);
``steps``: steps/s; ``setting``: the chosen value of a tuned row);
``digits_<row>_<metric>`` for the digits config, ``bf16_<row>_<metric>`` for the
bfloat16 run; ``bf16cmp_p<percent>_<row>_<f32|bf16>_dood`` for the two sides of the
bfloat16 comparison (``compare.json``: both runs of one protocol);
``bench_*`` for benchmarks.
:func:`headline_table` is the README's headline (``tests/test_docs.py`` checks it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "results" / "renditions" / "results.json"
DIGITS = ROOT / "experiments" / "results" / "digits" / "results.json"
BF16 = ROOT / "experiments" / "results" / "renditions_bf16" / "results.json"
BF16_COMPARE = ROOT / "experiments" / "results" / "renditions_bf16" / "compare.json"
BENCHMARKS = ROOT / "benchmarks" / "results"

# Short names of the default experiment's rows (their labels in results.json).
ROWS = {
    "vanilla": "vanilla (SGD)",
    "probe": "linear probe (SGD)",
    "lpft": "LP-FT (SGD)",
    "l2sp": "L2-SP (SGD)",
    "mars": "MARS-PGM (SGD)",
    "spd": "SPD (SGD)",
    "ftp": "FTP (SGD)",
    "ftp_k1": "FTP (SGD), k=1 (reference default)",
    "tpgm": "TPGM (SGD)",
    "vanilla_adamw": "vanilla (AdamW)",
    "ftp_adamw": "FTP (AdamW)",
    "probe_adamw": "linear probe (AdamW)",
    "head": "vanilla (SGD), pre-trained head",
    "wise": "WiSE-FT, vanilla (SGD)",
    "wise_head": "WiSE-FT, vanilla (SGD), pre-trained head",
}
HEADLINE_ROWS = ("vanilla", "ftp", "ftp_k1", "tpgm")


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def signed(value: float) -> str:
    text = f"{100 * value:+.1f}"
    return "+0.0" if text == "-0.0" else text


def number(value: float) -> str:
    """A setting as the report writes it: ``0.1``, ``2``, ``0.25``."""
    return f"{value:g}"


def row(results: dict, regime: int, label: str) -> dict:
    for entry in results["summary"]:
        if entry["regime"] == regime and entry["label"] == label:
            return entry
    labels = sorted({e["label"] for e in results["summary"] if e["regime"] == regime})
    raise KeyError(
        f"no row {label!r} at {regime}% in the results file; its rows: {labels}. Update "
        "ROWS in docs/_ext/ftp_results.py to the new labels."
    )


def experiment_values(results: dict, prefix: str = "") -> dict[str, str]:
    """``p<percent>_<row>_<metric>`` (with ``prefix``) of every labelled row of a results file."""
    values: dict[str, str] = {}
    pre = results["pretrained"]["tests"]
    ood_sets = results["ood_sets"]
    values[prefix + "pre_id"] = pct(pre[results["id_test"]]["accuracy"])
    values[prefix + "pre_ood"] = pct(sum(pre[s]["accuracy"] for s in ood_sets) / len(ood_sets))
    for regime in sorted({entry["regime"] for entry in results["summary"]}):
        labels = {entry["label"] for entry in results["summary"] if entry["regime"] == regime}
        reference = row(results, regime, ROWS["vanilla"])
        for short, label in ROWS.items():
            if label not in labels:
                continue
            entry = row(results, regime, label)
            key = f"{prefix}p{regime}_{short}_"
            values[key + "id"] = pct(entry["ID"]["mean"])
            values[key + "ood"] = pct(entry["OOD avg"]["mean"])
            values[key + "id_std"] = pct(entry["ID"]["std"])
            values[key + "ood_std"] = pct(entry["OOD avg"]["std"])
            values[key + "did"] = signed(entry["ID"]["mean"] - reference["ID"]["mean"])
            values[key + "dood"] = signed(entry["OOD avg"]["mean"] - reference["OOD avg"]["mean"])
            if entry.get("speed_vs_reference") is not None:
                values[key + "speed"] = f"{entry['speed_vs_reference']:.2f}x"
            if entry.get("steps_per_s"):
                values[key + "steps"] = f"{entry['steps_per_s']['mean']:.1f}"
            if entry.get("setting"):
                values[key + "setting"] = ", ".join(
                    f"{name} {number(value)}" for name, value in entry["setting"].items()
                )
    return values


def compare_values(compare: list[dict], prefix: str) -> dict[str, str]:
    """Each side's OOD gain over vanilla (SGD) in a comparison file (``experiment.compare``).

    ``<prefix>p<percent>_<row>_f32_dood`` from the reference run (``reference``),
    ``..._bf16_dood`` from the other: both from the runs the comparison compared, so a
    page never sets one protocol's numbers beside another's.
    """
    values: dict[str, str] = {}
    by_key = {(entry["regime"], entry["label"]): entry for entry in compare}
    for regime in sorted({entry["regime"] for entry in compare}):
        vanilla = by_key[(regime, ROWS["vanilla"])]
        for short, label in ROWS.items():
            entry = by_key.get((regime, label))
            if entry is None:
                continue
            for side, name in (("reference", "f32"), ("other", "bf16")):
                gain = entry[side]["OOD avg"]["mean"] - vanilla[side]["OOD avg"]["mean"]
                values[f"{prefix}p{regime}_{short}_{name}_dood"] = signed(gain)
    return values


def headline_table(results: dict | None = None) -> str:
    """The README's headline: ID / OOD of vanilla, FTP and TPGM at 100% of the fine-tuning data."""
    results = load(EXPERIMENT) if results is None else results
    regime = max(entry["regime"] for entry in results["summary"])
    domain = results["id_test"].rpartition("/")[2]
    seeds = len(row(results, regime, ROWS["vanilla"])["seeds"])
    cells = []
    for short in HEADLINE_ROWS:
        entry = row(results, regime, ROWS[short])
        cells.append(f"{pct(entry['ID']['mean'])} / {pct(entry['OOD avg']['mean'])}")
    header = "| accuracy %, ID / OOD avg | " + " | ".join(ROWS[s] for s in HEADLINE_ROWS) + " |"
    return "\n".join(
        [
            header,
            "|---" * (len(HEADLINE_ROWS) + 1) + "|",
            f"| {regime}% of `{domain}`, mean of {seeds} seeds | " + " | ".join(cells) + " |",
        ]
    )


def experiment_extra(results: dict) -> dict[str, str]:
    timings = results["timings"]
    return {
        "exp_seconds": f"{results['seconds']:.0f}",
        "exp_data_s": f"{timings['data']:.0f}",
        "exp_pretrain_s": f"{timings['pretrain']:.0f}",
        "exp_finetune_s": f"{timings['finetune']:.0f}",
        "exp_runs": str(len(results["runs"])),
        "exp_pretrain_examples": str(results["pretrain_train_examples"]),
        "exp_headline": headline_table(results),
    }


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}" if seconds < 0.1 else f"{1000 * seconds:.0f}"


def machine(data: dict) -> str:
    m = data["machine"]
    device = "GPU" if m["backend"] == "gpu" else f"{m['cpu_affinity']} CPU cores"
    return (
        f"{m['cpu_model']} ({m['cpu_family_model']}), {device}, JAX {m['jax']} on the "
        f"{m['backend'].upper()} backend"
    )


def update_table() -> str:
    lines = [
        "| device | model | base | base update (ms) | FTP update (ms) | FTP / base | "
        "bytes per param byte, base -> FTP |",
        "|---|---|---|---|---|---|---|",
    ]
    for device in ("cpu", "gpu"):
        data = load(BENCHMARKS / f"update_step_{device}.json")
        for model, model_data in data["models"].items():
            methods = model_data["methods"]
            for base in data["settings"]["bases"]:
                ftp = methods[f"ftp({base})"]
                lines.append(
                    f"| {device.upper()} | {model} | `{base}` | {_ms(methods[base]['median_s'])} | "
                    f"{_ms(ftp['median_s'])} | **{ftp['ratio_to_base']:.2f}x** | "
                    f"{methods[base]['bytes_accessed_per_param_byte']:.0f} -> "
                    f"{ftp['bytes_accessed_per_param_byte']:.0f} |"
                )
    return "\n".join(lines)


def train_table() -> str:
    lines = [
        "| device | batch | base | base step (ms) | FTP step (ms) | overhead, wall clock | "
        "overhead, FTP's update minus the base's |",
        "|---|---|---|---|---|---|---|",
    ]
    for device in ("cpu", "gpu"):
        data = load(BENCHMARKS / f"train_step_{device}.json")
        steps = data["steps"]
        for base in ("sgd+momentum", "adamw"):
            ftp = steps[f"ftp({base})"]
            # On a GPU the update alone is latency-bound, and its time does not add to a
            # fused step's: only the CPU's estimate is shown.
            from_update = ftp.get("overhead_from_update_only") if device == "cpu" else None
            lines.append(
                f"| {device.upper()} | {data['settings']['batch_size']} | `{base}` | "
                f"{_ms(steps[base]['median_s'])} | {_ms(ftp['median_s'])} | "
                f"{100 * ftp['overhead_vs_base']:+.1f}% | "
                + (f"{100 * from_update:+.1f}% |" if from_update is not None else "- |")
            )
    return "\n".join(lines)


def tpgm_table() -> str:
    lines = ["| device | TPGM projection update / a training step | apply-only / a training step |"]
    lines.append("|---|---|---|")
    for device in ("cpu", "gpu"):
        steps = load(BENCHMARKS / f"train_step_{device}.json")["steps"]
        update = steps["tpgm update_step"]["relative_to_sgd_momentum_step"]
        apply = steps["tpgm apply"]["relative_to_sgd_momentum_step"]
        lines.append(f"| {device.upper()} | {update:.2f}x | {apply:.3f}x |")
    return "\n".join(lines)


def memory_table() -> str:
    data = load(BENCHMARKS / "state_memory_cpu.json")
    lines = [
        "| optimizer | state, in param sizes | beyond the base optimizer |",
        "|---|---|---|",
    ]
    for name, entry in data["models"]["resnet50"]["methods"].items():
        extra = entry.get("extra_over_base_per_param")
        extra_text = "" if extra is None else f"{extra:.1f}"
        lines.append(f"| `{name}` | {entry['state_per_param']:.1f} | {extra_text} |")
    return "\n".join(lines)


def buffer_table() -> str:
    data = load(BENCHMARKS / "buffer_options_cpu.json")
    lines = [
        "| problem | option | params' departure / leaf scale | radius departure | test accuracy, "
        "exact -> option |",
        "|---|---|---|---|---|",
    ]
    for entry in data["rows"]:
        accuracy = (
            f"{pct(entry['test_accuracy_exact'])}% -> {pct(entry['test_accuracy_option'])}%"
            if "test_accuracy_exact" in entry
            else ""
        )
        lines.append(
            f"| {entry['problem']} | {entry['option']} | {entry['params_vs_leaf_scale']:.2g} | "
            f"{entry['radius']:.2g} | {accuracy} |"
        )
    return "\n".join(lines)


def input_values() -> dict[str, str]:
    data = load(BENCHMARKS / "input_pipeline_cpu.json")
    threads, processes = data["threads"], data["processes"]
    most = str(max(int(k) for k in threads))
    recipe = load(BENCHMARKS / "recipe_throughput_cpu.json")
    return {
        "bench_input_per_core": f"{data['images_per_s_per_core']:.0f}",
        "bench_input_workers": most,
        "bench_input_threads": f"{threads[most]['images_per_s']:.0f}",
        "bench_input_threads_eff": f"{threads[most]['scaling_efficiency']:.2f}",
        "bench_input_processes": f"{processes[most]['images_per_s']:.0f}",
        "bench_input_processes_eff": f"{processes[most]['scaling_efficiency']:.2f}",
        "bench_input_machine": f"{data['cores']} cores",
        "bench_recipe_ratio": f"{recipe['real_over_synthetic']:.2f}",
        "bench_recipe_model": (
            f"{recipe['model']} at width {recipe['width']} ({recipe['params'] / 1e6:.1f}M "
            f"params, {recipe['image_size']} px, batch {recipe['batch_size']}, "
            f"{recipe['compute_dtype']}, {recipe['workers']} worker threads)"
        ),
    }


def exactness_values() -> dict[str, str]:
    rows = load(ROOT / "experiments" / "results" / "reference.json")["rows"]

    def worst(precision: str, key: str) -> str:
        value = max(r[key] for r in rows if r["precision"] == precision)
        return f"{value:.0e}".replace("e-0", "e-")

    unrolled = load(ROOT / "experiments" / "results" / "tpgm_unrolled.json")
    runs = unrolled["runs"]
    temp = unrolled["update_step_temp_bytes"]
    return {
        "ref_f64_params": worst("float64", "params_deviation"),
        "ref_f64_radius": worst("float64", "radius_deviation"),
        "ref_f32_params": worst("float32", "params_deviation"),
        "ref_f32_radius": worst("float32", "radius_deviation"),
        "unrolled_loss_k0": f"{runs['K=0']['heldout_loss_after_projection']:.3f}",
        "unrolled_loss_k2": f"{runs['K=2']['heldout_loss_after_projection']:.3f}",
        "unrolled_loss_none": f"{unrolled['unprojected_heldout_loss']:.3f}",
        "unrolled_temp": ", ".join(
            f"K={k}: {v / 1024:.0f} KiB" for k, v in sorted(temp.items(), key=lambda kv: int(kv[0]))
        ),
    }


def benchmark_values() -> dict[str, str]:
    values = {
        "bench_update_table": update_table(),
        "bench_train_table": train_table(),
        "bench_tpgm_table": tpgm_table(),
        "bench_memory_table": memory_table(),
        "bench_buffer_table": buffer_table(),
        "bench_cpu_machine": machine(load(BENCHMARKS / "update_step_cpu.json")),
        "bench_gpu_machine": machine(load(BENCHMARKS / "update_step_gpu.json")),
    }
    cpu = load(BENCHMARKS / "update_step_cpu.json")["models"]
    gpu = load(BENCHMARKS / "update_step_gpu.json")["models"]
    for device, models in (("cpu", cpu), ("gpu", gpu)):
        for model in models:
            for base in ("sgd", "adamw"):
                ratio = models[model]["methods"][f"ftp({base})"]["ratio_to_base"]
                values[f"bench_{device}_{model}_{base}"] = f"{ratio:.2f}x"
    for device in ("cpu", "gpu"):
        steps = load(BENCHMARKS / f"train_step_{device}.json")["steps"]
        for base, short in (("sgd+momentum", "sgd"), ("adamw", "adamw")):
            overhead = steps[f"ftp({base})"]["overhead_vs_base"]
            values[f"bench_{device}_step_{short}"] = f"{100 * overhead:+.1f}%"
    values.update(input_values())
    return values


def substitutions() -> dict[str, str]:
    """Every value the pages may name."""
    experiment = load(EXPERIMENT)
    values = experiment_values(experiment)
    values.update(experiment_extra(experiment))
    values.update(experiment_values(load(DIGITS), prefix="digits_"))
    values.update(experiment_values(load(BF16), prefix="bf16_"))
    values.update(compare_values(load(BF16_COMPARE), prefix="bf16cmp_"))
    values.update(benchmark_values())
    values.update(exactness_values())
    return values


def setup(app):
    def add(app, config):
        config.myst_substitutions = {**substitutions(), **config.myst_substitutions}

    app.connect("config-inited", add)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
