"""Read YAML files strictly and say where the first problem of each is: a syntax error (file, line, column,
problem) or a key given twice in one mapping (the key and both lines).

  vpr check-config config/my.yaml            # a workflow configuration before `snakemake --configfile`
  vpr check-config train.yaml                # a `vpr train --config` file

Snakemake reads a --configfile itself before the workflow starts, and reports a syntax error there only
as "Config file is not valid JSON or YAML", without the file or the line; this command names both. Exit
status 0 when every file reads, 2 (one line per file that does not) otherwise.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="YAML file(s) to check")


def run(args: argparse.Namespace) -> int:
    import sys

    from vpr.errors import VprError
    from vpr.yamlfile import YamlFileError, load_yaml

    errors = []
    for path in args.files:
        try:
            content = load_yaml(path)
        except YamlFileError as err:
            errors.append(str(err))
            continue
        keys = f"{len(content)} top-level key(s)" if isinstance(content, dict) else type(content).__name__
        print(f"{path}: valid YAML, no key given twice ({keys})")
    if len(errors) == 1:
        raise VprError(errors[0])
    for message in errors:
        print(f"vpr check-config: error: {message}", file=sys.stderr)
    return 2 if errors else 0
