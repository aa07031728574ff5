#!/usr/bin/env python3
"""Issue 22, point 4: one meaning per word, one spelling. Replayable renames of the working tree.

Run from the repository root (any state: before or after the renames, on a merged tree)::

    python tools/renames.py            # apply, print every change
    python tools/renames.py --check    # print what would change, change nothing; exit 1 if anything would

What it does, in order:

1. Module moves with ``git mv`` (a move whose source is gone and whose target exists is taken as done;
   source and target both present is an error):
   ``vpr/report.py`` -> ``vpr/table.py`` (the results table; ``vpr/commands/table.py`` is its command, as
   ``vpr/evaluate.py`` and ``vpr/commands/evaluate.py``), ``vpr/results.py`` -> ``vpr/evaluation_files.py``
   (the recall CSV and the rankings file of ``vpr evaluate``), ``vpr/precision.py`` ->
   ``vpr/numeric_precision.py`` (autocast, TF32 and memory layout; "precision" alone reads as precision@k),
   and their tests ``tests/test_report.py`` -> ``tests/test_table.py``, ``tests/test_precision.py`` ->
   ``tests/test_numeric_precision.py``.
2. Text rewrites in every tracked text file (this script excepted), with word boundaries:
   the module paths and dotted names of 1; ``centre``/``centres``/``centred`` -> ``center``/``centers``/
   ``centered`` (any case, also inside identifiers such as ``neg_centres``); ``vpr.losses.tuple_loss`` ->
   ``bind_tuple_loss`` (binds a tuple loss's options by name); ``vpr.train.objective.tuple_loss`` ->
   ``batch_loss`` (the loss of one batch of tuples); ``Trainer.describe`` -> ``Trainer.extract_descriptors``;
   the training option ``test_batch_size`` / ``--test-batch-size`` -> ``extract_batch_size`` /
   ``--extract-batch-size`` (the extraction batch of mining and validation).
3. The old option name stays accepted (inserted once, anchored on existing lines; an anchor not found is an
   error): ``vpr train --test-batch-size`` and the key ``test_batch_size`` of ``vpr train --config`` (with a
   warning naming the new one), and the workflow configuration's ``test_batch_size`` is refused with
   "renamed to extract_batch_size" (``RENAMED_KEYS`` of workflow/rules/config.smk).

Before writing anything it fails (exit 1, nothing changed) when a new name is already used in a file that
still holds the old one, so a merged tree where someone introduced, e.g., a second ``batch_loss`` is not
silently merged into one name. Idempotent: a second run changes nothing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

SELF = "tools/renames.py"

MOVES = [
    ("vpr/report.py", "vpr/table.py"),
    ("vpr/results.py", "vpr/evaluation_files.py"),
    ("vpr/precision.py", "vpr/numeric_precision.py"),
    ("tests/test_report.py", "tests/test_table.py"),
    ("tests/test_precision.py", "tests/test_numeric_precision.py"),
]

# Lines that name an old spelling on purpose (the accepted aliases): never rewritten.
KEEP_LINE = re.compile(r"RENAMED_OPTIONS|RENAMED_KEYS|old name of|test_batch_size_alias")

# (pattern, replacement, new names that must not already exist where the pattern matches).
# Letter-only boundaries for centres: ``neg_centres`` and ``centres.h5`` are words of their own here.
L = r"(?<![A-Za-z])"
R = r"(?![A-Za-z])"
WORDS: list[tuple[str, str, tuple[str, ...]]] = [
    # modules (dotted, path and test-file forms)
    (r"\bvpr\.report\b", "vpr.table", ()),
    (r"\bvpr/report\.py\b", "vpr/table.py", ()),
    (r"\bvpr\.results\b", "vpr.evaluation_files", ("evaluation_files",)),
    (r"\bvpr/results\.py\b", "vpr/evaluation_files.py", ()),
    (r"\bvpr\.precision\b", "vpr.numeric_precision", ("numeric_precision",)),
    (r"\bvpr/precision\.py\b", "vpr/numeric_precision.py", ()),
    (r"\btest_report\.py\b", "test_table.py", ()),
    (r"\btest_precision\.py\b", "test_numeric_precision.py", ()),
    # one spelling: center(s), centered
    (L + r"centres" + R, "centers", ()),
    (L + r"Centres" + R, "Centers", ()),
    (L + r"CENTRES" + R, "CENTERS", ()),
    (L + r"centre" + R, "center", ()),
    (L + r"Centre" + R, "Center", ()),
    (L + r"centred" + R, "centered", ()),
    (L + r"Centred" + R, "Centered", ()),
    # Trainer.describe computes descriptors
    (r"\bdef describe\(self", "def extract_descriptors(self", ("extract_descriptors",)),
    (r"\b(self|trainer|Trainer)\.describe\b", r"\1.extract_descriptors", ("extract_descriptors",)),
    # the extraction batch of mining and validation
    (r"\btest_batch_size\b", "extract_batch_size", ("extract_batch_size",)),
    (r"--test-batch-size\b", "--extract-batch-size", ("--extract-batch-size",)),
]

# The two tuple_loss functions: qualified uses first, then the bare name by what the line or file means.
TUPLE_LOSS = re.compile(r"\btuple_loss\b")
BIND, BATCH = "bind_tuple_loss", "batch_loss"
# ``from MODULE import ... tuple_loss`` on one line or in parentheses over several
IMPORTS = r"from {} import (?:[^\n(]*|\([^)]*)\btuple_loss\b"


def tuple_loss_line(path: str, text: str, line: str) -> str:
    line = re.sub(r"\blosses\.tuple_loss\b", "losses." + BIND, line)
    line = re.sub(r"\bobjective\.tuple_loss\b", "objective." + BATCH, line)
    if not TUPLE_LOSS.search(line):
        return line
    if "vpr.losses" in line or "losses.py" in line:
        meaning = BIND
    elif "objective" in line:
        meaning = BATCH
    elif path == "vpr/losses.py" or re.search(IMPORTS.format(r"vpr\.losses"), text):
        meaning = BIND
    elif path == "vpr/train/objective.py" or re.search(IMPORTS.format(r"vpr\.train\.objective"), text):
        meaning = BATCH
    else:
        raise SystemExit(f"renames: {path}: cannot tell which tuple_loss this line means; rename it by "
                         f"hand to {BIND} (vpr.losses) or {BATCH} (vpr.train.objective):\n  {line.strip()}")
    return TUPLE_LOSS.sub(meaning, line)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def tracked_text_files() -> list[str]:
    out = []
    for path in git("ls-files", "-z").split("\0"):
        if not path or path == SELF or not Path(path).is_file():
            continue
        data = Path(path).read_bytes()
        if b"\0" in data:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append(path)
    return out


def rewrite(path: str, text: str) -> str:
    lines = text.splitlines(keepends=True)
    out = []
    for line in lines:
        if KEEP_LINE.search(line):
            out.append(line)
            continue
        for pattern, repl, _ in WORDS:
            line = re.sub(pattern, repl, line)
        if TUPLE_LOSS.search(line):
            line = tuple_loss_line(path, text, line)
        out.append(line)
    return "".join(out)


def check_targets(files: dict[str, str]) -> list[str]:
    """New names already present in a file that still holds an old one: a clash to settle by hand."""
    problems = []
    for path, text in files.items():
        body = "\n".join(line for line in text.splitlines() if not KEEP_LINE.search(line))
        for pattern, _, targets in WORDS:
            if targets and re.search(pattern, body):
                for target in targets:
                    if re.search(r"(?<![\w-])" + re.escape(target) + r"(?![\w-])", body):
                        problems.append(f"{path}: holds both {pattern!r} and the new name {target!r}")
        if re.search(r"\btuple_loss\b", body):
            for target in (BIND, BATCH):
                if re.search(r"\b" + target + r"\b", body):
                    problems.append(f"{path}: holds both tuple_loss and the new name {target!r}")
    return problems


# ---------------------------------------------------------------------------------------- alias inserts
def _insert_after(path: str, anchor: str, block: str, done: str) -> tuple[str, str] | None:
    """(path, new text) with ``block`` after the line ``anchor`` unless ``done`` is in the file already."""
    text = Path(path).read_text(encoding="utf-8")
    if done in text:
        return None
    if anchor not in text:
        raise SystemExit(f"renames: {path}: anchor not found, add the alias by hand: {anchor.strip()!r}")
    return path, text.replace(anchor, anchor + block, 1)


def alias_edits() -> list[tuple[str, str]]:
    edits = []
    cfg = "vpr/train/config.py"
    e = _insert_after(cfg, "RUNTIME_ONLY = (\"workers\", \"extract_batch_size\", \"print_freq\")\n",
                      "# Options renamed before the first release, old name: new name (the old name is still "
                      "accepted).\nRENAMED_OPTIONS = {\"test_batch_size\": \"extract_batch_size\"}\n",
                      "RENAMED_OPTIONS = {")
    if e:
        text = e[1]
        text = text.replace("import json\n", "import json\nimport logging\n", 1) \
            if "import logging\n" not in text else text
        anchor = "def make_config("
        func = ('def _renamed(values: dict, where: str) -> dict:\n'
                '    """``values`` with the old option names of RENAMED_OPTIONS given their new names (a '
                'warning\n    says the new one); the old and the new name both given is an error."""\n'
                '    values = dict(values)\n'
                '    for old, new in RENAMED_OPTIONS.items():\n'
                '        if old in values:\n'
                '            if new in values:\n'
                '                raise VprError(f"{where}: {old} is the old name of {new}; '
                'give only {new}")\n'
                '            logging.getLogger(__name__).warning("%s: %s is the old name of %s", where, old, '
                'new)\n'
                '            values[new] = values.pop(old)\n'
                '    return values\n\n\n')
        if anchor not in text:
            raise SystemExit(f"renames: {cfg}: anchor not found: {anchor!r}")
        text = text.replace(anchor, func + anchor, 1)
        load = ("            raise VprError(f\"{path}: expected a mapping of training options\")\n")
        if load not in text:
            raise SystemExit(f"renames: {cfg}: anchor not found: {load.strip()!r}")
        text = text.replace(load, load + "        loaded = _renamed(loaded, str(path))\n", 1)
        edits.append((cfg, text))

    cmd = "vpr/commands/train.py"
    e = _insert_after(cmd, "        opts.add_argument(flag, **kwargs)\n",
                      "    for old, new in RENAMED_OPTIONS.items():   # old spellings, still accepted\n"
                      "        opts.add_argument(\"--\" + old.replace(\"_\", \"-\"), dest=new, "
                      "default=argparse.SUPPRESS,\n"
                      "                          type=type(getattr(TrainConfig(), new)),\n"
                      "                          help=f\"old name of --{new.replace('_', '-')}\")\n",
                      "RENAMED_OPTIONS.items()")
    if e:
        text = e[1]
        imp = "from vpr.train.config import TrainConfig\n"
        if imp not in text:
            raise SystemExit(f"renames: {cmd}: anchor not found: {imp.strip()!r}")
        new_imp = "from vpr.train.config import RENAMED_OPTIONS, TrainConfig\n"
        edits.append((cmd, text.replace(imp, new_imp, 1)))

    smk = "workflow/rules/config.smk"
    text = Path(smk).read_text(encoding="utf-8")
    m = re.search(r"^RENAMED_KEYS = \{(.*)\}\n", text, re.M)
    if m is None:
        raise SystemExit(f"renames: {smk}: no line 'RENAMED_KEYS = {{...}}': add test_batch_size "
                         "to it by hand")
    if "test_batch_size" not in m.group(1):
        inner = m.group(1).strip()
        new = "{" + (inner + ", " if inner else "") + "\"test_batch_size\": \"extract_batch_size\"}"
        edits.append((smk, text[:m.start()] + "RENAMED_KEYS = " + new + "\n" + text[m.end():]))
    return edits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a change is due")
    args = parser.parse_args()
    root = git("rev-parse", "--show-toplevel").strip()
    if Path.cwd().resolve() != Path(root).resolve():
        raise SystemExit(f"renames: run from the repository root ({root})")

    moves = []
    for src, dst in MOVES:
        if Path(src).exists() and Path(dst).exists():
            raise SystemExit(f"renames: both {src} and {dst} exist: merge them by hand first")
        if Path(src).exists():
            moves.append((src, dst))

    files = {p: Path(p).read_text(encoding="utf-8") for p in tracked_text_files()}
    problems = check_targets(files)
    if problems:
        print("renames: new names already in use (nothing changed):", *problems, sep="\n  ", file=sys.stderr)
        return 1

    # every rewrite is computed before anything is written: a line it cannot settle changes nothing
    rewritten = {path: rewrite(path, text) for path, text in sorted(files.items())}
    changed = 0
    for src, dst in moves:
        print(f"git mv {src} {dst}")
        changed += 1
        if not args.check:
            git("mv", src, dst)
    moved = dict(moves)
    for path, text in sorted(files.items()):
        new = rewritten[path]
        if new == text:
            continue
        target = moved.get(path, path)
        old_lines, new_lines = text.splitlines(), new.splitlines()
        for no, (a, b) in enumerate(zip(old_lines, new_lines, strict=True), start=1):
            if a != b:
                print(f"{target}:{no}: {a.strip()}\n{' ' * len(f'{target}:{no}:')} {b.strip()}")
                changed += 1
        if not args.check:
            Path(target).write_text(new, encoding="utf-8")
    if args.check:
        return 1 if changed else 0
    for path, text in alias_edits():
        print(f"{path}: old option name test_batch_size kept as an accepted alias")
        Path(path).write_text(text, encoding="utf-8")
        changed += 1
    print(f"renames: {changed} change(s)" if changed else "renames: nothing to change")
    return tidy()


def tidy() -> int:
    """Sort the imports the renames put out of order (ruff's I rules, with the project's settings) and
    name the lines they made too long: those are for a person to wrap. Exit 1 when ruff is not clean."""
    candidates = (str(Path(sys.executable).parent / "ruff"), ".venv/bin/ruff", shutil.which("ruff") or "")
    ruff = next((c for c in candidates if c and Path(c).exists()), None)
    if ruff is None:
        print("renames: ruff not found: run `ruff check --fix --select I .` and `ruff check .` yourself",
              file=sys.stderr)
        return 1
    subprocess.run([ruff, "check", "--fix", "--select", "I", "--quiet", "."], check=False)
    if subprocess.run([ruff, "check", "--quiet", "."], check=False).returncode:
        print("renames: ruff is not clean after the renames (above): wrap those lines by hand",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
