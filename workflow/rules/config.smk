# The configuration: which file, and every check of it at start-up, each failing with one line.
#
# No `configfile:` directive: Snakemake merges --configfile files into it recursively, so a demo or custom
# config would inherit the paper's methods and paths. Instead: without --configfile the paper config is
# loaded here; with --configfile, that file's content is the configuration, nothing added. --config
# key=value overrides apply on top in both cases.
import json
import os
import sys
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from snakemake.utils import update_config

from vpr.train.generations import ScheduleError, SfrsSchedule

DEFAULT_CONFIG = Path(workflow.basedir).parent / "config" / "config.yaml"
SCHEMA = Path(workflow.basedir) / "schemas" / "config.schema.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# The model training starts from (trunk + NetVLAD centers, no training): the "off-the-shelf" row and folder.
OFF_THE_SHELF = "off-the-shelf"
# Keys renamed before the first release, with their new names (an old configuration is told what to write
# instead).
RENAMED_KEYS = {"test_batch_size": "extract_batch_size"}


def config_error(source, message):
    """One line on stderr and exit status 1: no traceback for a configuration the user can fix."""
    print(f"vpr workflow: configuration error: {source}: {message}", file=sys.stderr)
    sys.exit(1)


def config_source():
    files = [str(f) for f in (workflow.overwrite_configfiles or [])]
    return ", ".join(files) if files else str(DEFAULT_CONFIG)


def _strict_yaml():
    """vpr's strict YAML reader (vpr/yamlfile.py: a repeated key is an error, errors are one line): the
    installed vpr, else the checkout's file beside this workflow (Snakemake may run without vpr)."""
    try:
        import vpr.yamlfile as strict_yaml
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "vpr_yamlfile", Path(workflow.basedir).parent / "vpr" / "yamlfile.py")
        strict_yaml = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(strict_yaml)
    return strict_yaml


def load_strictly(path):
    """The content of a configuration file read strictly; one line and exit 1 for a syntax error or a key
    given twice (Snakemake's own reading keeps the last of two equal keys). JSON stays JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError):
        pass
    yamlfile = _strict_yaml()
    try:
        return yamlfile.load_yaml(path)
    except yamlfile.YamlFileError as err:
        print(f"vpr workflow: configuration error: {err}", file=sys.stderr)
        sys.exit(1)


def load_default_config():
    """config/config.yaml, with the file and line of a YAML syntax error or of a key given twice."""
    loaded = load_strictly(DEFAULT_CONFIG)
    if not isinstance(loaded, dict):
        config_error(DEFAULT_CONFIG, "expected a mapping of configuration keys")
    return loaded


def schema_message(error):
    """A jsonschema error as 'key.path: what is wrong'."""
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = ".".join([*map(str, error.absolute_path), extra[0]]) if extra else path
        hint = f"; valid keys here: {', '.join(allowed)}" if allowed else ""
        if extra and extra[0] in RENAMED_KEYS:
            hint = f"; renamed to {RENAMED_KEYS[extra[0]]}"
        return f"{key}: unknown key{hint}"
    if error.validator == "required":
        return f"{path}: {error.message}"
    if error.validator == "dependentRequired":
        missing = [k for deps in error.validator_value.values() for k in deps if k not in error.instance]
        return f"{missing[0]}: missing (needed to train the methods under `methods`)"
    if error.validator == "enum":
        return f"{path}: {error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "type":
        return f"{path}: expected {error.validator_value}, got {error.instance!r}"
    if error.validator == "pattern":
        return f"{path}: {error.instance!r} does not match {error.validator_value}"
    return f"{path}: {error.message}"


def sfrs_schedule(cfg, shared=None):
    """The SFRS generations (vpr/train/generations.py) of the options over `training` (``shared``: the
    options of every method; default: `training`) and methods.sfrs' own; methods.sfrs.generations, else
    one generation per teacher temperature (methods.sfrs', else training's, else those of `vpr train`)."""
    own = dict(cfg["methods"]["sfrs"])
    count = own.pop("generations", None)
    return SfrsSchedule({**(cfg["training"] if shared is None else shared), **own}, count,
                        where="methods.sfrs.")


def check_schema(cfg, source):
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    error = best_match(Draft202012Validator(schema).iter_errors(cfg))
    if error is not None:
        config_error(source, schema_message(error))


def check_meaning(cfg, source):
    """What the schema cannot say: references between keys, and values `vpr train` would refuse later."""
    datasets = cfg["datasets"]

    def known_dataset(key, name):
        if name not in datasets:
            config_error(source, f"{key}: {name!r} is not a data set under datasets "
                                 f"({', '.join(datasets)})")

    for name, entry in datasets.items():
        if entry["format"] == "folders":
            if "csv" in entry or "mat" in entry:
                config_error(source, f"datasets.{name}: format folders reads the image names (no `csv:`, "
                                     "no `mat:`)")
            continue
        if "database" in entry or "queries" in entry:
            config_error(source, f"datasets.{name}: `database:` and `queries:` belong to format folders")
        want = "csv" if entry["format"] == "csv" else "mat"
        other = "mat" if want == "csv" else "csv"
        if want not in entry or other in entry:
            config_error(source, f"datasets.{name}: format {entry['format']} needs `{want}:` (and no "
                                 f"`{other}:`)")
    for test_set, name in cfg["test_sets"].items():
        known_dataset(f"test_sets.{test_set}", name)
    methods = cfg.get("methods") or {}
    external = cfg.get("external") or {}
    needs_training = bool(methods) or cfg.get("off_the_shelf", False)
    needs_train_split = needs_training or any(not e["own_pca"] for e in external.values())
    for key in ("train", "val") if needs_training else ("train",) if needs_train_split else ():
        if key not in cfg:
            purpose = "train on" if key == "train" else "validate on"
            config_error(source, f"{key}: missing (name the data set to {purpose})")
    for key in ("train", "val"):
        if key in cfg:
            known_dataset(key, cfg[key])
    if needs_training:
        for key in ("model", "training", "pca"):
            if key not in cfg:
                config_error(source, f"{key}: missing (needed to train or evaluate the off-the-shelf model)")
    elif needs_train_split and "pca" not in cfg:
        config_error(source, "pca: missing (external models with own_pca: false get their PCA fitted here)")
    if not methods and not external and not cfg.get("off_the_shelf", False):
        config_error(source, "nothing to evaluate: give `methods`, `external` or `off_the_shelf: true`")
    taken = set(methods) | ({OFF_THE_SHELF} if cfg.get("off_the_shelf", False) else set())
    for name in external:
        if name in taken:
            config_error(source, f"external.{name}: the name is taken by a trained model; choose another")
    if "sfrs" in methods:
        try:
            sfrs_schedule(cfg)
        except ScheduleError as err:
            config_error(source, str(err))
    evaluated = [*([OFF_THE_SHELF] if cfg.get("off_the_shelf", False) else []), *methods, *external]
    if "examples" in cfg and cfg["examples"] not in evaluated:
        config_error(source, f"examples: {cfg['examples']!r} is not an evaluated model "
                             f"({', '.join(evaluated)})")
    if not {1, 5, 10} <= set(cfg["evaluate"]["recall_at"]):
        config_error(source, "evaluate.recall_at: must include 1, 5 and 10 (the columns of the table)")


# Written under the results folder by no rule but named there by the docs (`--report RESULTS/report.html`).
RESULTS_EXTRA_NAMES = ("report.html",)


def results_step_names(rules, results):
    """The folders and files that the rules write directly under the results folder (plots, logs, train,
    table.md, ...): every name but the per-model folders, which are a wildcard there."""
    top = Path(results).parts
    written = (Path(os.path.normpath(str(path))).parts for r in rules for path in (*r.output, *r.log))
    return set(RESULTS_EXTRA_NAMES) | {parts[len(top)] for parts in written
                                      if parts[:len(top)] == top and len(parts) > len(top)
                                      and "{" not in parts[len(top)]}


def check_model_names(cfg, models, rules, results):
    """Each evaluated model's results go to RESULTS/<model>/: a model named like a step's folder or file there
    (`plots`, `logs`, `train`, ...) would mix its results with the step's; refused before any job runs."""
    steps = results_step_names(rules, results)
    for name in models:
        if name in steps:
            key = f"external.{name}" if name in (cfg.get("external") or {}) else f"methods.{name}"
            config_error(config_source(), f"{key}: the name is taken by {results}/{name}, which the "
                                          f"workflow writes itself ({', '.join(sorted(steps))}); choose another")


def resolve_config(cfg):
    """Replace the content of `config` by the configuration this run uses, checked."""
    if not workflow.overwrite_configfiles:
        loaded = load_default_config()
        update_config(loaded, workflow.config_settings.overwrite_config or {})
    else:
        for path in workflow.overwrite_configfiles:   # read by Snakemake already, but not strictly
            load_strictly(path)
        loaded = dict(cfg)
    # Plain dicts and lists (a JSON config file arrives as OrderedDicts), as YAML would give them.
    plain = json.loads(json.dumps(loaded))
    cfg.clear()
    cfg.update(plain)
    source = config_source()
    check_schema(cfg, source)
    check_meaning(cfg, source)
