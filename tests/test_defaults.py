"""One home per default: the package owns every default (TrainConfig for `vpr train` and the workflow's
training options, the library function cluster() for `vpr cluster`); the workflow's schema states them for
the person writing a configuration, and the workflow passes only the keys a configuration sets. These tests
fail when a default differs between the schema, the workflow and the package.
"""

from __future__ import annotations

import inspect

import pytest
import yaml
from test_workflow import REPO, job_counts, shell_commands, snakemake, write_config

from vpr.cli import build_parser
from vpr.cluster import cluster
from vpr.train.config import TrainConfig

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
# `cluster` section key (the `vpr cluster` option of that name) -> parameter of cluster()
CLUSTER_KEYS = {"images": "num_images", "per_image": "per_image", "iterations": "iterations", "seed": "seed",
                "batch_size": "batch_size", "workers": "workers"}
MODEL_KEYS = ("backbone", "num_clusters", "trainable_from", "image_size")


def library_defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def cli_defaults(command: str, *required: str) -> dict:
    """The value of every option of `vpr COMMAND` when only the required ones are given."""
    return vars(build_parser(command).parse_args([command, *required]))


def test_every_training_option_of_the_schema_states_the_default_of_vpr_train():
    options = SCHEMA["$defs"]["train_options"]["properties"]
    package = TrainConfig()
    stated = {name: prop.get("default", "(none)") for name, prop in options.items()}
    assert stated == {name: getattr(package, name) for name in options}
    # The methods' options are the same entries (a YAML merge of train_options), so the same defaults.
    method = SCHEMA["$defs"]["method"]["properties"]
    assert all(method[name].get("default") == stated[name] for name in options)


def test_the_cluster_and_evaluate_defaults_of_the_schema_are_those_of_the_package():
    library = library_defaults(cluster)
    stated = {key: prop.get("default") for key, prop in SCHEMA["properties"]["cluster"]["properties"].items()}
    assert stated == {key: library[CLUSTER_KEYS[key]] for key in stated}
    extract = cli_defaults("extract", "--checkpoint", "m.pth", "--index", "i.h5", "--out", "f.h5")
    assert SCHEMA["properties"]["evaluate"]["properties"]["precision"]["default"] == extract["precision"]
    from vpr.selection import EVERY_CHECKPOINT_DEFAULT

    stated = SCHEMA["properties"]["evaluate"]["properties"]["every_checkpoint"]["default"]
    assert stated == EVERY_CHECKPOINT_DEFAULT


def test_vpr_cluster_takes_its_defaults_from_cluster_and_builds_the_model_vpr_train_builds():
    given = cli_defaults("cluster", "--index", "i.h5", "--out", "c.h5")
    library = library_defaults(cluster)
    for option, parameter in {**CLUSTER_KEYS, "precision": "precision"}.items():
        assert given[option] == library[parameter], option
    # centers for `vpr train` with its defaults: same backbone, K and image size
    train = TrainConfig()
    assert (given["backbone"], given["num_clusters"], list(given["image_size"])) == \
        (train.backbone, train.num_clusters, train.image_size)


def test_the_library_model_defaults_are_those_of_vpr_train():
    from vpr.models import ModelConfig

    model, train = ModelConfig(), TrainConfig()
    assert {k: getattr(model, k) for k in MODEL_KEYS} == \
        {k: tuple(v) if isinstance(v, list) else v for k, v in ((k, getattr(train, k)) for k in MODEL_KEYS)}


def test_the_schema_has_no_default_the_package_does_not_own():
    """Every `default` in the schema is one checked above: none can drift unseen."""
    def defaults(node, path=()):
        if isinstance(node, dict):
            if "default" in node:
                yield path[1], path[-1]        # (section, key), e.g. ("cluster", "images")
            for key, value in node.items():
                yield from defaults(value, (*path, key))

    options = SCHEMA["$defs"]["train_options"]["properties"]
    checked = {(section, name) for section in ("train_options", "method") for name in options}
    checked |= {("cluster", key) for key in CLUSTER_KEYS} | {("evaluate", "precision"),
                                                          ("evaluate", "every_checkpoint")}
    assert set(defaults(SCHEMA)) == checked


@pytest.mark.slow
def test_the_workflow_takes_the_sfrs_schedule_from_vpr_train_when_the_config_gives_none(tmp_path):
    """No temperatures and no generations in the config: one SFRS job per default temperature of `vpr
    train`, and no --temperatures flag (vpr train applies its own)."""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    sfrs = {k: v for k, v in demo["methods"]["sfrs"].items() if k not in ("generations", "temperatures")}
    assert "temperatures" not in demo["training"]
    path = write_config(tmp_path / "c.yaml", "demo.yaml", **{"methods.sfrs": sfrs})
    dry = snakemake(tmp_path, "-n", "-p", "--configfile", path).stdout
    generations = len(TrainConfig().temperatures)
    assert job_counts(dry)["train_sfrs"] == generations
    commands = shell_commands(dry)["train_sfrs"]
    assert sorted(int(c.split("--generation ")[1].split()[0]) for c in commands) == list(range(generations))
    assert not any("--temperatures" in c for c in commands)

