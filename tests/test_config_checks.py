"""Mistakes fail before any work: every option of every method, every derived setting.

- A method's options are refused by its transform's own checks (one rule in one
  place): the options dataclass's error is the transform's error for the same
  value (:func:`ftp_jax.train.methods.check_options`).
- The experiment's and the recipes' configs are checked whole, every derived
  setting included (each regime's epochs, LP-FT's ``lp_epochs`` from its share,
  each grid value, the method on the model's parameter paths), by ``validate``,
  which the command lines run after ``--set`` (``--print-config`` too) and
  ``run_experiment`` before preparing data: exit 2 within seconds.

In-process calls only (configs and abstract models: no data, no compile).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import optax
import pytest

import ftp_jax
from ftp_jax import cli
from ftp_jax.experiment.config import Regime, default_config, digits_config, quick, validate
from ftp_jax.recipes import config as recipes_config
from ftp_jax.train import MethodConfig, TrainConfig, apply_overrides, methods


def _loss(params, batch, **kwargs):
    return 0.0


# The transforms themselves, called with one option changed: what the options must agree with.
TRANSFORMS = {
    "ftp": lambda **o: ftp_jax.ftp(optax.identity(), **o),
    "tpgm": lambda **o: ftp_jax.tpgm(optax.identity(), _loss, **o),
    "l2sp": lambda **o: ftp_jax.l2sp(**{"alpha": 1.0, **o}),
    "mars_pgm": lambda **o: ftp_jax.mars_pgm(optax.identity(), **{"radius": 0.5, **o}),
    "spd": lambda **o: ftp_jax.spd(optax.identity(), **o),
}
NAN, INF = math.nan, math.inf

# (method, option, refused values, accepted values). A row per option of every method:
# adding an option (or a method) needs a row here (test_every_option_has_a_row).
OPTIONS = [
    ("ftp", "k", [-0.1, 1.5, 2, NAN, INF, True, "1"], [0, 0.0, 0.5, 1, 1.0]),
    ("ftp", "norm", ["l1", "", None, "MARS"], ["mars", "l2"]),
    ("tpgm", "norm", ["l1", None], ["mars", "l2"]),
    ("tpgm", "max_iters", [0, -1, 1.5, True], [1, 200]),
    ("tpgm", "radius_learning_rate", [-1e-3, NAN, INF, "0.01"], [0.0, 1e-2]),
    ("tpgm", "proj_freq", [-1, 1.5, True], [1, 10]),
    ("tpgm", "post_hoc_iters", [-1, 2.5], [0, 200]),
    ("l2sp", "alpha", [-1.0, NAN, INF, True], [0.0, 10.0]),
    ("l2sp", "beta", [-1e-3, NAN, INF], [0.0, 0.01]),
    ("l2sp", "decoupled", [1, "yes", None], [True, False]),
    ("mars_pgm", "radius", [-1.0, NAN, INF, True, "abc", ()], [0.0, 0.5, 3]),
    ("mars_pgm", "norm", ["l1", 1], ["mars", "l2"]),
    ("spd", "strength", [-0.5, NAN, INF, None], [0.0, 1.0, 3]),
    ("lp_ft", "lp_epochs", [0, -1, 2.5, True], [1, 10]),
]
# Options that are settings of the run (the loop's, or epochs), not arguments of the
# transform: the options dataclass checks them itself.
RUN_SETTINGS = {
    ("tpgm", "proj_freq"),
    ("tpgm", "post_hoc_iters"),
    ("l2sp", "decoupled"),
    ("lp_ft", "lp_epochs"),
}


def _options(method: str, **values):
    return methods.options_type(method)(**values)


def _error(function) -> str | None:
    try:
        function()
    except (ValueError, TypeError) as error:
        return str(error)
    return None


def test_every_option_has_a_row():
    covered = {(method, option) for method, option, _, _ in OPTIONS}
    for name, entry in methods.REGISTRY.items():
        for field in dataclasses.fields(entry.options):
            assert (name, field.name) in covered, (name, field.name)


@pytest.mark.parametrize(("method", "option", "refused", "accepted"), OPTIONS)
def test_options_are_refused_by_the_transforms_own_checks(method, option, refused, accepted):
    extra = {"post_hoc_iters": 1} if (method, option) == ("tpgm", "proj_freq") else {}
    for value in accepted:
        _options(method, **{option: value}, **extra)
    for value in refused:
        message = _error(lambda: _options(method, **{option: value}))  # noqa: B023
        assert message is not None, (method, option, value)
        if (method, option) in RUN_SETTINGS:
            assert option in message, message
            continue
        # The transform's own message, word for word: the rule lives in the transform.
        direct = _error(lambda: TRANSFORMS[method](**{option: value}))  # noqa: B023
        if direct is not None:
            assert message == direct, (method, option, value, message, direct)
        else:  # a structure the transform takes but the run config does not (not a number)
            assert "method.options.radius" in message, message


def test_ftp_k_above_one_is_refused_as_ftp_refuses_it():
    """Regression: FTPOptions took k >= 0, ftp() takes 0 <= k <= 1: k=2 failed at the FTP row."""
    with pytest.raises(ValueError, match=r"^ftp: `k` must be a finite number in \[0, 1\], got 2"):
        methods.FTPOptions(k=2)
    with pytest.raises(ValueError, match=r"^ftp: `k` must be a finite number in \[0, 1\]"):
        ftp_jax.ftp(optax.identity(), k=2)


def test_radius_rules_are_checked_as_rules():
    methods.MarsPGMOptions(radius=(("conv.*", 1.0), (".*", 0.5)))
    for rules, fragment in (
        ((("(", 1.0),), r"rule #0 has an invalid pattern '\('"),
        ((("a", 1.0, 2),), r"rule #0 must be a \(regex, value\) pair"),
        ((("a", -1.0),), r"the rule for 'a': MARS-PGM: `radius` at '.*' must be a finite number"),
        ((("a", "big"),), r"the rule for 'a': MARS-PGM: `radius` at '.*' must be a finite number"),
    ):
        with pytest.raises(ValueError, match=fragment):
            methods.MarsPGMOptions(radius=rules)


def test_tpgm_that_never_projects_and_lp_ft_of_zero_epochs():
    with pytest.raises(ValueError, match=r"proj_freq=0 and post_hoc_iters=0 never projects"):
        methods.TPGMOptions(proj_freq=0)
    methods.TPGMOptions(proj_freq=0, post_hoc_iters=3)
    with pytest.raises(ValueError, match=r"lp_epochs=0 is method 'vanilla'"):
        methods.LPFTOptions(lp_epochs=0)


def test_check_options_turns_a_transforms_type_error_into_a_value_error(monkeypatch):
    """A config value the transform refuses with a TypeError is still a refused value."""

    def refuses(context):
        raise TypeError("refused by type")

    monkeypatch.setitem(methods.REGISTRY, "spd", methods.Entry(methods.SPDOptions, refuses))
    with pytest.raises(ValueError, match="refused by type"):
        methods.check_options(methods.SPDOptions(strength=0.123456))


# --- run settings: TrainConfig, MethodConfig --------------------------------------------

TRAIN_CASES = [
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(epochs=2.5), "epochs must be an integer"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(eval_batch_size=-1), "eval_batch_size must be >= 1"),
    (dict(keep_checkpoints=0), "keep_checkpoints must be >= 1"),
    (dict(checkpoint_every=-1), "checkpoint_every must be >= 0"),
    (dict(seed=-1), "seed must be >= 0"),
    (dict(warmup_epochs=-1), "warmup_epochs must be >= 0"),
    (dict(epochs=3, warmup_epochs=4), r"warmup_epochs=4 is longer than the run \(epochs=3\)"),
    (dict(progress="yes"), "progress must be True or False"),
    (dict(lr_schedule="linear"), "unknown lr_schedule 'linear'"),
    (dict(compute_dtype="int8"), "unknown compute_dtype 'int8'"),
]
METHOD_CASES = [
    (dict(learning_rate=0.0), "method.learning_rate must be a finite number > 0"),
    (dict(learning_rate=INF), "method.learning_rate must be a finite number > 0"),
    (dict(momentum=1.0), r"method.momentum must be a finite number in \[0, 1\)"),
    (dict(momentum=-0.1), r"method.momentum must be a finite number in \[0, 1\)"),
    (dict(weight_decay=-1e-4), "method.weight_decay must be a finite number >= 0"),
    (dict(weight_decay=NAN), "method.weight_decay must be a finite number >= 0"),
    (dict(head_pattern="("), r"`method.head_pattern` rule #0 has an invalid pattern"),
    (dict(optimizer="adam"), "unknown method.optimizer 'adam'"),
    (dict(name="l2sp", weight_decay=1e-4), "'l2sp' replaces weight decay"),
    (dict(name="ftpp"), "unknown method.name 'ftpp'"),
]


@pytest.mark.parametrize(("settings", "message"), TRAIN_CASES)
def test_train_config_refuses(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


@pytest.mark.parametrize(("settings", "message"), METHOD_CASES)
def test_method_config_refuses(settings, message):
    with pytest.raises(ValueError, match=message):
        MethodConfig(**settings)


def test_lp_epochs_must_leave_epochs_to_fine_tune():
    lp_ft = MethodConfig(name="lp_ft", options=methods.LPFTOptions(lp_epochs=3))
    with pytest.raises(ValueError, match=r"lp_epochs=3 and epochs=3 never fine-tunes"):
        TrainConfig(epochs=3, method=lp_ft)
    TrainConfig(epochs=4, method=lp_ft)


# --- the experiment: every derived setting -------------------------------------------


@pytest.fixture(scope="module")
def renditions():
    return default_config()


def _row(config, name: str, tuned: bool | None = None) -> int:
    """The position of the first row running method ``name`` (tuned or not, if given)."""
    for index, row in enumerate(config.methods):
        if row.method.name == name and (tuned is None or bool(row.tune) == tuned):
            return index
    raise LookupError(name)


def _refused(config, overrides: list[str], *fragments: str) -> str:
    """``validate`` (or ``--set`` itself) refuses ``config`` after ``overrides``, naming
    ``fragments``."""
    start = time.process_time()  # CPU seconds: what a loaded machine does not stretch
    with pytest.raises(ValueError) as caught:
        validate(apply_overrides(config, overrides))
    assert time.process_time() - start < 20
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


CONFIGS = sorted(
    path
    for path in (Path(__file__).resolve().parent.parent / "experiments" / "configs").glob("*.py")
    if path.name != "__init__.py"
)


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_shipped_configs_pass(path):
    """Every config file the command lines ship (and its --quick version) passes the checks."""
    from ftp_jax.experiment.config import ExperimentConfig
    from ftp_jax.experiment.regime_study import RegimeStudyConfig, validate_study
    from ftp_jax.recipes.config import RecipeConfig

    config = cli.load_config(str(path), object)
    start = time.process_time()
    if isinstance(config, ExperimentConfig):
        validate(config)
        validate(quick(config))
    elif isinstance(config, RecipeConfig):
        recipes_config.validate(config)
    elif isinstance(config, RegimeStudyConfig):
        validate_study(config)
    else:
        raise AssertionError(f"{path.name}: {type(config).__name__} has no config check")
    assert time.process_time() - start < 20


def test_quick_with_one_epoch_fails_at_once_naming_the_epochs(renditions):
    """Regression: ``--quick --set finetune.epochs=1`` failed after 80 s of work at LP-FT's
    derived ``lp_epochs=0``, an option the user never set."""
    config = quick(renditions)
    lp_ft = _row(config, "lp_ft", tuned=True)
    _refused(
        config,
        ["finetune.epochs=1"],
        f"methods.{lp_ft} ('{config.methods[lp_ft].label}') tunes lp_share",
        "finetune.epochs=1",
        "set finetune.epochs >= 2",
    )


def test_a_regimes_own_epochs_are_named(renditions):
    own = next(i for i, r in enumerate(renditions.regimes) if r.epochs)
    _refused(renditions, [f"regimes.{own}.epochs=1"], f"set regimes.{own}.epochs >= 2")
    _refused(renditions, [f"regimes.{own}.epochs=-1"], f"regimes.{own}.epochs")
    extra = len(renditions.regimes)
    with pytest.raises(ValueError, match=rf"regimes.{extra}.percent=30: .*\(1, 5, 10, 20, 50"):
        validate(dataclasses.replace(renditions, regimes=(*renditions.regimes, Regime(30))))
    _refused(
        renditions,
        ["finetune.warmup_epochs=3", f"regimes.{own}.epochs=2"],
        f"regimes.{own}.epochs=2",
        "warmup_epochs=3 is longer than the run",
    )


def test_every_option_of_every_row_through_set(renditions):
    """Each row's options, set through ``--set`` to a refused value, are refused (the rows
    whose tuned option the grid replaces are refused through the grid)."""
    config = renditions
    by_option = {(method, option): refused[0] for method, option, refused, _ in OPTIONS}
    for index, row in enumerate(config.methods):
        for field in dataclasses.fields(row.method.options):
            value = by_option[row.method.name, field.name]
            key = f"methods.{index}.method.options.{field.name}={value!r}"
            if field.name == row.tune:
                key = f"methods.{index}.grid=({value!r},)"
            with pytest.raises(ValueError):
                validate(apply_overrides(config, [key]))


def test_grid_values_are_checked_by_the_methods_checks(renditions):
    for name, bad in (("l2sp", -1.0), ("mars_pgm", -0.5), ("spd", -3.0)):
        index = _row(renditions, name, tuned=True)
        _refused(
            renditions,
            [f"methods.{index}.grid=(1.0, {bad})"],
            f"methods.{index}.grid",
            f"{renditions.methods[index].tune}={bad}",
            "must be a finite number >= 0",
        )
    lp_ft = _row(renditions, "lp_ft", tuned=True)
    _refused(renditions, [f"methods.{lp_ft}.grid=(0.5, 1.5)"], "an lp_share must be in (0, 1)")
    # Two shares that give the same whole number of linear-probe epochs: the same run twice.
    _refused(
        quick(renditions),
        [f"methods.{lp_ft}.grid=(0.4, 0.6)"],
        f"methods.{lp_ft}.grid=(0.4, 0.6)",
        "give the same run",
    )


def test_fixed_lp_epochs_against_the_runs_epochs():
    digits = digits_config()
    lp_ft = _row(digits, "lp_ft")
    _refused(
        digits,
        ["finetune.epochs=8"],
        f"methods.{lp_ft} ('LP-FT (SGD)')",
        "finetune.epochs=8",
        "lp_epochs=10 and epochs=8",
    )


def test_the_method_is_built_on_the_models_paths(renditions):
    """Head pattern and radius rules are checked on the model's paths (abstractly)."""
    ftp = _row(renditions, "ftp")
    _refused(
        renditions,
        [f"methods.{ftp}.method.head_pattern=fc/.*"],
        f"methods.{ftp}",
        "rule 'fc/.*' matched no parameter",
    )
    _refused(
        renditions,
        ["pretrain.method.name=linear_probe", "pretrain.method.head_pattern=x"],
        "pretrain",
    )
    digits = digits_config()
    mars = _row(digits, "mars_pgm", tuned=False)
    _refused(
        digits,
        [f"methods.{mars}.method.options.radius=(('conv1/.*', 1.0),)"],
        f"methods.{mars}",
        "no rule covers 'conv2/",
    )


def test_experiment_wide_settings(renditions):
    _refused(renditions, ["seeds=(0, 0)", "tune_seeds=(0,)"], "repeat a seed")
    _refused(renditions, ["seeds=(0, -1)"], "seeds.1 must be >= 0")
    _refused(renditions, ["train_subset=-1"], "train_subset must be >= 0")
    _refused(renditions, ["train_subset=8"], "batch_size=", "more than the 8 training examples")
    _refused(quick(renditions), ["finetune.batch_size=1024"], "finetune.batch_size=1024")
    _refused(renditions, ["channels=2"], "channels must be 1 (grey) or 3 (RGB)")
    _refused(renditions, ["id_dataset=photo"], "id_dataset: 'photo' is not one of")
    _refused(renditions, ["ood_datasets=(('nope', 'test'),)"], "ood_datasets.0: 'nope'")
    with pytest.raises(ValueError, match=r"wise_ft_alphas must be numbers in \[0, 1\]"):
        apply_overrides(renditions, ["wise_ft_alphas=(0.5, 1.5)"])


def test_run_experiment_validates_before_preparing_data(tmp_path, monkeypatch):
    from ftp_jax.experiment import run

    def prepare(*args, **kwargs):
        raise AssertionError("data prepared before the config was checked")

    monkeypatch.setattr(run.data, "prepare_datasets", prepare)
    config = apply_overrides(quick(default_config()), ["finetune.epochs=1"])
    with pytest.raises(ValueError, match="set finetune.epochs >= 2"):
        run.run_experiment(config, tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / "data").exists()


def test_command_line_exits_2_in_seconds_before_any_work(tmp_path, capsys):
    """Both mistakes of the issue, through ``main`` (in process): exit 2, one line, no work."""
    from ftp_jax.experiment.__main__ import main

    config = default_config()
    ftp, l2sp = _row(config, "ftp"), _row(config, "l2sp", tuned=True)
    workdir = tmp_path / "w"
    for argv, fragment in (
        (
            ["--quick", "--set", "finetune.epochs=1", "--workdir", str(workdir), "--no-progress"],
            "set finetune.epochs >= 2",
        ),
        (["--set", f"methods.{ftp}.method.options.k=2", "--print-config"], "ftp: `k` must be"),
        (["--quick", "--set", "finetune.epochs=1", "--print-config"], "--quick"),
        # An option the row's grid would silently replace.
        (
            ["--set", f"methods.{l2sp}.method.options.alpha=5.0", "--print-config"],
            f"set methods.{l2sp}.grid=(...) instead",
        ),
    ):
        start = time.process_time()
        assert main(argv) == cli.EXIT_USAGE, argv
        assert time.process_time() - start < 30
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (workdir / "data").exists() and not (workdir / "pretrain").exists()


# --- the recipes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe():
    return recipes_config.domainnet("ftp_sgd")


def test_recipes_derived_settings(recipe):
    recipes_config.validate(recipe)
    cases = [
        (["train_percent=10", "train=('domainnet/real', 'train[:50%]')"], "train_percent=10"),
        (["train_percent=30"], "one of (1, 5, 10, 20, 50, 100)"),
        (["class_subsets=(('domainnet/sketch', (0, 400)),)"], "class_subsets.0"),
        (["finetune.method.head_pattern=fc/.*"], "rule 'fc/.*' matched no parameter"),
        (["finetune.method.name=mars_pgm", "finetune.method.options.radius=(('x', 1.0),)"], "x"),
    ]
    for overrides, fragment in cases:
        with pytest.raises(ValueError, match=None) as caught:
            recipes_config.validate(apply_overrides(recipe, overrides))
        assert fragment in str(caught.value), (overrides, str(caught.value))
    for overrides, fragment in (
        (["finetune.method.options.k=2"], "ftp: `k` must be a finite number in [0, 1]"),
        (["num_classes=0"], "num_classes must be >= 1"),
        (["ood=(('domainnet/sketch',),)"], "ood"),
    ):
        with pytest.raises(ValueError) as caught:
            apply_overrides(recipe, overrides)
        assert fragment in str(caught.value), (overrides, str(caught.value))


def test_recipes_command_line_print_config_exits_2(tmp_path, capsys):
    from ftp_jax.recipes.__main__ import main

    config = tmp_path / "recipe.py"
    config.write_text(
        "from ftp_jax.recipes import domainnet\n\n\ndef get_config():\n"
        "    return domainnet('tpgm')\n"
    )
    argv = ["--config", str(config), "--print-config", "--set", "train_percent=10"]
    assert main([*argv, "--set", "train=('domainnet/real', 'test[:5]')"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "train_percent=10" in err and "Traceback" not in err, err
    assert main(argv) == 0


def test_checks_touch_no_device():
    """Checking configs (options, methods on the model, the whole experiment) only traces:
    a multi-host recipe calls ``jax.distributed.initialize()`` after its config is checked,
    which JAX refuses once a backend is up. A fresh process, as the command line's."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        from jax._src import xla_bridge
        from ftp_jax.experiment.config import default_config, quick, validate
        from ftp_jax.train import methods
        methods.FTPOptions(k=0.5, norm="l2")
        validate(quick(default_config()))
        from ftp_jax.recipes import config as recipes
        recipes.validate(recipes.domainnet("ftp_sgd"))
        assert not xla_bridge._backends, xla_bridge._backends
        """
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_run_recipe_validates_before_reading_inputs(tmp_path, recipe):
    from ftp_jax.recipes.run import run_recipe

    bad = apply_overrides(recipe, ["finetune.method.head_pattern=fc/.*"])
    with pytest.raises(ValueError, match="rule 'fc/.*' matched no parameter"):
        run_recipe(bad, data_dir=tmp_path / "no_data", workdir=tmp_path / "w", weights="x.pt")


def test_regime_study_checks_every_cell_before_any_work(renditions):
    """The FTP regime study derives its runs per cell and k: each is checked by the
    experiment's own ``validate`` (the transform's rules), naming the cell."""
    from ftp_jax.experiment.regime_study import Cell, RegimeStudyConfig, validate_study

    study = RegimeStudyConfig(experiment=renditions, ks=(0.0, 1.5), cells=(Cell(64, 4),))
    with pytest.raises(ValueError, match=r"cell 'batch 64, 4 epochs'.*k"):
        validate_study(study)
    negative = RegimeStudyConfig(experiment=renditions, ks=(1.0,), cells=(Cell(64, 0),))
    with pytest.raises(ValueError, match=r"cell 'batch 64, 0 epochs'.*epochs"):
        validate_study(negative)
