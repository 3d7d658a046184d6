"""Config files: same names as the flags, type-checked against RunConfig's annotations and the strategies' signatures."""

from __future__ import annotations

import json

import pytest

from lifelong_kd.cli import main


def _run_config(tmp_path, text: str, *flags: str) -> tuple[int, str]:
    config = tmp_path / "run.toml"
    config.write_text(text)
    return main(["run", "--config", str(config), "--quiet", "--out", str(tmp_path / "r"), *flags]), str(config)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('lr = "fast"', "key 'lr' must be a number, got 'fast' (a string)"),
        ("severities = 3", "key 'severities' must be a list of integers, got 3 (an integer)"),
        ('shifts = ["blur"]', "key 'shifts' must be a string, got ['blur'] (an array)"),
        ("model = 3", "key 'model' must be a string, got 3 (an integer)"),
        ("epochs = true", "key 'epochs' must be an integer, got True (a boolean)"),
        ('tensorboard = "yes"', "key 'tensorboard' must be true or false, got 'yes' (a string)"),
        ("class_order = [1, 0.5]", "key 'class_order' must be a list of integers, got [1, 0.5] (an array)"),
        ('strategy = "lwf"\ntemperature = "hot"', "key 'temperature' must be a number, got 'hot' (a string)"),
        ('strategy = "lwf"\nalpha = [0, 1, "x"]', "key 'alpha' must be a number or a list of numbers, got [0, 1, 'x'] (an array)"),
        ('strategy = "ewc"\n[strategy_options]\nfisher_samples = 1.5', "key 'fisher_samples' must be an integer, got 1.5 (a float)"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_file_key_type_and_value(tmp_path, capsys, line, message):
    code, path = _run_config(tmp_path, line + "\n")
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"Config file {path}: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_typed_values_are_accepted_and_numbers_widen_to_floats(tmp_path):
    text = 'strategy = "lwf"\nepochs = 1\ntrain-size = 40\nlr = 1\nshifts = "none"\nseverities = [1, 3]\ntensorboard = false\n[strategy_options]\nalpha = [0, 1, 1, 1, 1]\ntemperature = 3\n'
    code, _ = _run_config(tmp_path, text)
    assert code == 0
    record = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert record["lr"] == 1.0 and record["severities"] == [1, 3]
    # the options given, typed; the record fills in the strategy's defaults of the others
    assert {"alpha": [0.0, 1.0, 1.0, 1.0, 1.0], "temperature": 3.0}.items() <= record["strategy_options"].items()
    assert record["strategy_options"]["scale_t2"] is False


def test_a_flag_overrides_a_badly_typed_strategy_option_only_when_it_is_given(tmp_path, capsys):
    code, _ = _run_config(tmp_path, 'strategy = "lwf"\ntemperature = 1e30\nepochs = 1\ntrain-size = 40\nshifts = "none"\n', "--no-tensorboard")
    assert code == 2 and "temperature must be a number from 0.1 to 100" in capsys.readouterr().err
    code, _ = _run_config(tmp_path, 'strategy = "lwf"\ntemperature = 1e30\nepochs = 1\ntrain-size = 40\nshifts = "none"\n', "--temperature", "2", "--no-tensorboard")
    assert code == 0


def test_damaged_toml_and_a_missing_file_are_clear_errors(tmp_path, capsys):
    code, path = _run_config(tmp_path, "epochs = = 1\n")
    assert code == 2 and f"Config file {path} is not valid TOML" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err
