"""The SFRS schedule (docs/method.md §4.4): generations 0 .. G-1, each one `vpr train --method sfrs` run.

Generation 0 trains `gen0_epochs` epochs with the hard loss alone. Generation g >= 1 trains `epochs` epochs,
learns from the last checkpoint of generation g - 1 (its teacher) with the soft loss at the teacher
temperature `temperatures[g]` (weight `soft_weight`), and picks its difficult positives by the k-reciprocal
re-ranked distance (`rerank_k1`, `rerank_k2`, `rerank_lambda`). :func:`used_options` says which options a
run uses; :class:`SfrsSchedule` gives each generation those options, its teacher and its run directory.
The workflow (one job per generation) and `vpr train --generations` read both, and a training state is
compared on the used options only: an edit of `temperatures[3]` concerns generation 3 alone.

Torch-free (the workflow imports it when it builds the DAG).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from vpr.errors import VprError

# The reference scripts' teacher temperature of each generation (the default of `vpr train`).
DEFAULT_TEMPERATURES = (0.07, 0.07, 0.06, 0.05)
# Options only SFRS reads: a baseline run (NetVLAD/SARE losses) uses none of them.
SFRS_OPTIONS = ("generation", "temperatures", "temperature", "soft_weight", "gen0_epochs", "pos_num",
                "pos_pool", "rerank_k1", "rerank_k2", "rerank_lambda")
# Options only generations >= 1 read: the teacher's soft loss, the re-ranked positives, their epoch count.
TEACHER_OPTIONS = ("temperature", "soft_weight", "rerank_k1", "rerank_k2", "rerank_lambda", "epochs")
# The run directory of generation g, under the method's folder (the workflow's results/train/sfrs, or the
# --out of `vpr train --generations`), and the files a generation writes there that others read.
RUN_DIR = "gen{generation}"
TEACHER_FILE = "last.pth"


class ScheduleError(VprError):
    """An SFRS schedule that cannot be trained (one line naming the option)."""


def teacher_temperature(options: Mapping) -> float | None:
    """The teacher temperature of the run: `temperature` when given, else entry `generation` of
    `temperatures` (None when neither gives one)."""
    if options.get("temperature") is not None:
        return float(options["temperature"])
    temperatures, generation = options.get("temperatures"), int(options.get("generation", 0) or 0)
    if temperatures is not None and generation < len(temperatures):
        return float(temperatures[generation])
    return None


def used_options(options: Mapping) -> dict:
    """The entries of ``options`` (names of `vpr train` options) that one run reads, in their order.

    A baseline run (``method`` absent or ``baseline``) drops every SFRS option. An SFRS run keeps its
    generation's teacher temperature as ``temperature`` (never the whole ``temperatures`` list);
    generation 0 drops the teacher's options and ``epochs``, generations >= 1 drop ``gen0_epochs``.
    """
    if options.get("method", "baseline") != "sfrs":
        return {k: v for k, v in options.items() if k not in SFRS_OPTIONS}
    generation = int(options.get("generation", 0) or 0)
    unused = {"temperatures", *(TEACHER_OPTIONS if generation == 0 else ("gen0_epochs",))}
    used = {k: v for k, v in options.items() if k not in unused and k != "temperature"}
    temperature = teacher_temperature(options)
    if generation >= 1 and temperature is not None:
        used["temperature"] = temperature
    return used


@dataclass(frozen=True)
class Generation:
    """One SFRS generation: its number, the options it uses, its run directory and its teacher's file."""

    number: int
    options: dict             # what this generation's `vpr train` run uses (method and generation included)
    run_dir: str              # relative to the method's folder: gen<g>
    teacher: str | None       # relative to the method's folder: gen<g-1>/last.pth; None for generation 0

    @property
    def last(self) -> str:
        """The file the next generation learns from."""
        return f"{self.run_dir}/{TEACHER_FILE}"

    @property
    def epochs_option(self) -> str:
        """The option counting this generation's epochs: ``gen0_epochs`` for generation 0, else ``epochs``."""
        return "gen0_epochs" if self.number == 0 else "epochs"


class SfrsSchedule:
    """The generations of one SFRS training, from its options.

    ``options`` maps `vpr train` option names to values (those given: a key left out keeps `vpr train`'s
    default; ``temperatures`` left out is :data:`DEFAULT_TEMPERATURES`). ``generations`` is the number of
    generations (None: one per temperature). ``where`` prefixes the option names in error messages (the
    workflow's ``methods.sfrs.``).
    """

    def __init__(self, options: Mapping, generations: int | None = None, where: str = ""):
        self.options = {k: v for k, v in options.items() if k not in ("method", "generation", "temperature")}
        temperatures = options.get("temperatures", DEFAULT_TEMPERATURES)
        if (isinstance(temperatures, (str, bytes)) or not hasattr(temperatures, "__len__")
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0
                           for t in temperatures)):
            raise ScheduleError(f"{where}temperatures: expected a list of numbers greater than 0, got "
                                f"{temperatures!r}")
        if not temperatures:
            raise ScheduleError(f"{where}temperatures: empty; give one teacher temperature per generation")
        self.temperatures = tuple(float(t) for t in temperatures)
        count = len(self.temperatures) if generations is None else generations
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ScheduleError(f"{where}generations: expected a whole number of at least 1, got {count!r}")
        if count > len(self.temperatures):
            raise ScheduleError(f"{where}generations: {count} generations need {count} temperatures, "
                                f"{where}temperatures has {len(self.temperatures)}")
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Generation]:
        return (self[g] for g in range(self.count))

    def __getitem__(self, g: int) -> Generation:
        if not 0 <= g < self.count:
            raise IndexError(f"generation {g} is not one of 0 .. {self.count - 1}")
        given = {**self.options, "method": "sfrs", "generation": g}
        if g >= 1:
            given["temperature"] = self.temperatures[g]
        teacher = f"{RUN_DIR.format(generation=g - 1)}/{TEACHER_FILE}" if g >= 1 else None
        return Generation(g, used_options(given), RUN_DIR.format(generation=g), teacher)
