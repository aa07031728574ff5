"""The SFRS schedule (vpr/train/generations.py): what each generation's run receives, which options its
training state is compared on, and the refusals; in-process and torch-free (the workflow imports it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vpr.errors import VprError
from vpr.train.checkpointing import differences
from vpr.train.config import TrainConfig, make_config
from vpr.train.generations import ScheduleError, SfrsSchedule

PAPER = [0.07, 0.07, 0.06, 0.05]
# What the workflow hands the schedule: shared training options and the method's own.
GIVEN = {"backbone": "small", "lr": 0.001, "epochs": 5, "gen0_epochs": 1, "loss": "sare_ind",
         "temperatures": PAPER, "soft_weight": 0.5, "pos_num": 10, "pos_pool": 20, "rerank_k1": 20,
         "workers": 2}
TEACHER_ONLY = {"temperature", "soft_weight", "rerank_k1", "epochs"}


def test_each_generation_gets_its_own_temperature_teacher_and_run_directory():
    schedule = SfrsSchedule(GIVEN)
    assert len(schedule) == 4
    gens = list(schedule)
    assert [g.run_dir for g in gens] == ["gen0", "gen1", "gen2", "gen3"]
    assert [g.teacher for g in gens] == [None, "gen0/last.pth", "gen1/last.pth", "gen2/last.pth"]
    assert gens[2].last == "gen2/last.pth"
    # generation 0: the hard loss alone, gen0_epochs epochs; no teacher option, no temperature at all
    zero = gens[0].options
    assert zero["method"] == "sfrs" and zero["generation"] == 0 and zero["gen0_epochs"] == 1
    assert not TEACHER_ONLY & set(zero) and "temperatures" not in zero
    # generation g >= 1: entry g of the paper's list (0.07, 0.06, 0.05 for g = 1, 2, 3), never the list
    for g, expected in ((1, 0.07), (2, 0.06), (3, 0.05)):
        options = gens[g].options
        assert options["temperature"] == expected and options["generation"] == g
        assert "temperatures" not in options and "gen0_epochs" not in options
        assert TEACHER_ONLY <= set(options)
    # each generation's epoch count: gen0_epochs (1) for generation 0, epochs (5) after it
    assert [g.options[g.epochs_option] for g in gens] == [1, 5, 5, 5]
    # the options every run uses pass through unchanged
    assert all(g.options["lr"] == 0.001 and g.options["loss"] == "sare_ind" for g in gens)


@pytest.mark.parametrize(("edit", "changed"), [
    ({"temperatures": [0.07, 0.07, 0.06, 0.04]}, {3}),
    ({"temperatures": [0.03, 0.07, 0.06, 0.05]}, set()),       # entry 0: no generation uses it
    ({"soft_weight": 0.25}, {1, 2, 3}),
    ({"rerank_k1": 10}, {1, 2, 3}),
    ({"epochs": 3}, {1, 2, 3}),
    ({"gen0_epochs": 2}, {0}),
    ({"pos_num": 5}, {0, 1, 2, 3}),
    ({"lr": 0.01}, {0, 1, 2, 3}),
])
def test_an_edit_reaches_only_the_generations_that_use_it(edit, changed):
    before, after = SfrsSchedule(GIVEN), SfrsSchedule({**GIVEN, **edit})
    assert {g for g in range(4) if before[g].options != after[g].options} == changed


def test_fewer_generations_than_temperatures_and_the_default_temperatures():
    assert [g.options.get("temperature") for g in SfrsSchedule(GIVEN, 2)] == [None, 0.07]
    no_list = SfrsSchedule({"lr": 0.001})
    assert len(no_list) == len(TrainConfig().temperatures) == 4
    assert [g.options.get("temperature") for g in no_list] == [None, *TrainConfig().temperatures[1:]]


@pytest.mark.parametrize(("options", "generations", "message"), [
    (GIVEN, 5, "methods.sfrs.generations: 5 generations need 5 temperatures, methods.sfrs.temperatures "
               "has 4"),
    (GIVEN, 0, "methods.sfrs.generations: expected a whole number of at least 1, got 0"),
    (GIVEN, True, "methods.sfrs.generations: expected a whole number of at least 1, got True"),
    ({"temperatures": []}, None, "methods.sfrs.temperatures: empty"),
    ({"temperatures": [0.07, 0.0]}, None, "methods.sfrs.temperatures: expected a list of numbers greater "
                                          "than 0, got [0.07, 0.0]"),
    ({"temperatures": "0.07"}, None, "methods.sfrs.temperatures: expected a list of numbers"),
])
def test_a_schedule_that_cannot_be_trained_is_one_line_naming_the_option(options, generations, message):
    with pytest.raises(ScheduleError) as err:
        SfrsSchedule(options, generations, where="methods.sfrs.")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert isinstance(err.value, VprError)    # `vpr train --generations` prints it as one line
    with pytest.raises(IndexError):
        SfrsSchedule(GIVEN)[4]


def sfrs(generation, **changes):
    return TrainConfig(method="sfrs", generation=generation, **changes).validate()


def test_the_training_state_compares_only_what_its_generation_uses():
    """A finished or interrupted generation stays valid when another generation's option is edited."""
    edited = {"temperatures": [0.07, 0.07, 0.06, 0.04]}
    for g in (0, 1, 2):
        assert sfrs(g).fingerprint() == sfrs(g, **edited).fingerprint()
    assert sfrs(3).fingerprint() != sfrs(3, **edited).fingerprint()
    assert sfrs(0).fingerprint() == sfrs(0, soft_weight=0.1, epochs=9, rerank_k1=3).fingerprint()
    assert sfrs(1).fingerprint() != sfrs(1, soft_weight=0.1).fingerprint()
    assert sfrs(1).fingerprint() == sfrs(1, gen0_epochs=4).fingerprint()
    # a baseline uses no SFRS option
    assert TrainConfig().fingerprint() == TrainConfig(temperatures=[0.1], soft_weight=0.2, gen0_epochs=3,
                                                      pos_num=2, rerank_lambda=0.3).fingerprint()
    # the per-generation spelling is the same run as the entry of the list
    assert sfrs(3, temperature=0.05).fingerprint() == sfrs(3).fingerprint()
    assert sfrs(3, temperature=0.05).teacher_temperature == sfrs(3).teacher_temperature == 0.05
    # what a resumed run reports: the one option that differs, under the generation's own name
    saved = {"config": sfrs(3).to_dict(), "inputs": {}}
    assert differences(saved, sfrs(3, **edited).to_dict(), {}) == ["temperature: saved 0.05, now 0.04"]
    assert differences({"config": sfrs(2).to_dict(), "inputs": {}}, sfrs(2, **edited).to_dict(), {}) == []
    # a state written before `temperature` existed (no such key) compares the same way
    old = {k: v for k, v in sfrs(2).to_dict().items() if k != "temperature"}
    assert differences({"config": old, "inputs": {}}, sfrs(2, temperature=0.06).to_dict(), {}) == []


def test_the_teacher_temperature_of_a_generation_and_its_refusals():
    assert sfrs(2).teacher_temperature == 0.06                     # entry 2 of the default list
    assert sfrs(2, temperature=0.03).teacher_temperature == 0.03   # --temperature replaces it
    assert sfrs(6, temperature=0.03).teacher_temperature == 0.03   # beyond the list, given explicitly
    cfg = make_config(None, {"method": "sfrs", "generation": 1, "temperature": 1})
    assert cfg.temperature == 1.0 and isinstance(cfg.temperature, float)
    with pytest.raises(VprError, match="generation: 6 needs a teacher temperature"):
        sfrs(6)
    with pytest.raises(VprError, match="temperature: must be greater than 0, got -0.1"):
        sfrs(1, temperature=-0.1)
    with pytest.raises(VprError, match="temperature: expected float, got 'x'"):
        make_config(None, {"temperature": "x"})
    with pytest.raises(VprError, match="temperature: only an SFRS generation >= 1 learns from a teacher"):
        make_config(None, {"method": "sfrs", "generation": 0, "temperature": 0.05})


def test_the_schedule_imports_no_torch():
    code = "import sys, vpr.train.generations, vpr.train.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--temperatures", "0.07", "0.05", "--generations", "3"],
     "--generations: 3 generations need 3 temperatures, --temperatures has 2"),
    (["--generations", "all", "--generation", "1", "--teacher", "t.pth"],
     "--generations sets each generation's --generation, --teacher itself; leave them out"),
    (["--generations", "all", "--method", "baseline"],
     "--generations trains SFRS generations; add --method sfrs"),
])
def test_vpr_train_generations_refuses_what_it_sets_itself_in_one_line(tmp_path, monkeypatch, capsys, extra,
                                                                        message):
    from vpr.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("train.h5", "val.h5", "centers.h5", "t.pth"):
        (tmp_path / name).write_bytes(b"")
    args = ["train", "--train-index", "train.h5", "--val-index", "val.h5", "--centers", "centers.h5",
            "--out", "runs", "--method", "sfrs", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vpr train: error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_vpr_train_generations_refuses_an_input_a_generation_would_overwrite(tmp_path, monkeypatch, capsys):
    """OUT/gen<g>/log.csv is written by generation g (OUT's own check covers OUT/*.pth at any depth)."""
    from vpr.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "gen1").mkdir(parents=True)
    for name in ("train.h5", "val.h5", "centers.h5", "runs/gen1/log.csv"):
        (tmp_path / name).write_text("{}")
    args = ["train", "--train-index", "train.h5", "--val-index", "val.h5", "--centers", "centers.h5",
            "--config", "runs/gen1/log.csv", "--out", "runs", "--method", "sfrs", "--generations", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--config runs/gen1/log.csv: lies in the output directory --out runs/gen1" in err, err
    assert (tmp_path / "runs" / "gen1" / "log.csv").read_text() == "{}"
