"""Reading a YAML file strictly: a key given twice in one mapping is an error, and every error is one line.

PyYAML's ``safe_load`` keeps the last of two equal keys silently (a duplicated ``lr:`` trains with the value
further down the file), and its syntax errors span several lines. :func:`load_yaml` refuses a duplicated
key, naming it and both lines, and reports a syntax error as ``FILE line L, column C: PROBLEM``.

Every YAML file vpr reads goes through here: `vpr train --config`, and the workflow's configuration
(workflow/rules/config.smk loads this file by its path, so that it needs only PyYAML: Snakemake may run in
an environment without vpr installed). Hence no import from vpr here.
"""

from __future__ import annotations

import os

import yaml


class YamlFileError(ValueError):
    """A YAML file that cannot be read, is not valid YAML, or repeats a key; the message is one line."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, message: str, mark):
        super().__init__(message)
        self.problem, self.problem_mark = message, mark


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (merge keys ``<<`` may still be overridden)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:   # an unhashable key: SafeLoader's own error names it
                    continue
                line = key_node.start_mark.line + 1
                if first != line:
                    raise _DuplicateKey(f"key {key!r} is given twice (lines {first} and {line}); keep one",
                                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def yaml_error_line(err: yaml.YAMLError) -> str:
    """``line L, column C: not valid YAML (PROBLEM)``, or for a repeated key ``line L, column C: key 'k' is
    given twice (...)``, in one line (without a position when PyYAML knows none)."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    if isinstance(err, _DuplicateKey):
        return where + err.problem
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    text = " ".join((f"{problem}, {context}" if context else problem).split())
    return f"{where}not valid YAML ({text})"


def load_yaml(path: str | os.PathLike):
    """The content of the YAML file ``path``; YamlFileError (one line naming the file) when it is missing,
    unreadable, not valid YAML, or repeats a key in a mapping. An empty file is None."""
    if os.path.isdir(path):
        raise YamlFileError(f"{path}: is a directory, expected a YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise YamlFileError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise YamlFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise YamlFileError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)   # a SafeLoader: plain data only, no objects
    except yaml.YAMLError as err:
        raise YamlFileError(f"{path}: {yaml_error_line(err)}") from None
