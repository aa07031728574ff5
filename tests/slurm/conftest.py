"""Fixtures for tests that need a real local Slurm cluster, started by tests/slurm/start-cluster.sh.

`slurm_cluster` (session): one node `localhost` with four fake GPUs, 32 CPUs and 256 GB declared (more
than the machine has: the largest requests of profiles/slurm, 4 GPUs, 16 CPUs and 128 GB per training job,
must be schedulable as shipped), accounting through slurmdbd, partition `debug`, and /etc/slurm/slurm.conf
linked to its configuration when that path is free (`system_conf`): the Snakemake Slurm plugin drops
SLURM_CONF before it runs srun inside a job.
`slurm_cluster_2nodes` (session, started only when a test asks for it): nodes `node1` and `node2` in their
own network namespaces (the machine's CPUs and memory, two fake GPUs each); their jobs resolve the node
names and find the cluster's slurm.conf as /etc/slurm/slurm.conf.

A cluster that cannot be started (not root, no apt-get, a daemon fails) skips the tests that use it, with
the start script's output in the reason; VPR_SLURM_REQUIRED=1 turns that into an error. A cluster already
running in the state directory is used and left running; one the fixture started is stopped at the end of
the session and its state directory removed (kept with VPR_SLURM_KEEP=1).

Every test collected from this directory is marked `slurm` and `slow` (`pytest -m "not slurm"` leaves them
out; so does `make test`, the fast tier).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START = HERE / "start-cluster.sh"
STOP = HERE / "stop-cluster.sh"

# What the one-node cluster declares: room for the largest requests of profiles/slurm (a training job: 4
# GPUs, 16 CPUs, 128 GB) and a second job beside it.
PROFILE_SIZED = ("--gpus", "4", "--cpus", "32", "--mem", "262144")

# sacct states after which a job never changes again.
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE")


# stop-cluster.sh runs of finished clusters: started in the background when a session fixture ends (each
# takes ~7 s, mostly daemons' own shutdown delays) and awaited when the session finishes.
_stopping: list[subprocess.Popen] = []


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees the whole session's items: mark only those collected from this directory.
    # Slow too: bringing up the cluster (apt-get when root) and every job take minutes; `make test` skips.
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _stopping:
        proc = _stopping.pop()
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class SlurmCluster:
    """A running test cluster: pass `env` to every subprocess that runs a Slurm command."""

    state: Path
    env: dict[str, str]  # os.environ (no SLURM_*/SBATCH_*) plus SLURM_CONF, VPR_SLURM_* from <state>/env
    partition: str
    account: str
    nodes: list[str]
    system_conf: str  # "/etc/slurm/slurm.conf" when jobs find this cluster's configuration there, else ""

    def run(self, *args: str | Path, timeout: float = 30) -> str:
        """Run a Slurm client command against this cluster; return its stdout, raise on failure."""
        proc = subprocess.run([str(a) for a in args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def sbatch(self, *args: str | Path) -> str:
        """Submit with `sbatch --parsable` and return the job ID."""
        return self.run("sbatch", "--parsable", f"--partition={self.partition}", *args).strip().split(";")[0]

    def squeue_state(self, job_id: str) -> str:
        """The job's state while squeue still lists it as pending/running/completing, else ''."""
        return self.run("squeue", "-h", "-j", job_id, "-o", "%T").strip()

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 60) -> str:
        """Poll squeue until the job is in one of `states`; return that state."""
        deadline = time.monotonic() + timeout
        while (state := self.squeue_state(job_id)) not in states:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state or 'gone'} after {timeout}s, wanted {states}")
            time.sleep(0.2)
        return state

    def wait_finished(self, job_id: str, timeout: float = 60) -> None:
        """Poll squeue (cheaper and faster than `sbatch --wait`) until the job has left the queue."""
        self.wait_state(job_id, ("",), timeout)

    def sacct(self, job_id: str, timeout: float = 30) -> dict[str, str]:
        """The job's allocation record from sacct, polled until its State is final."""
        fields = ["JobID", "State", "ExitCode", "NodeList", "AllocTRES"]
        deadline = time.monotonic() + timeout
        while True:
            out = self.run("sacct", "-n", "-P", "-X", "-j", job_id, "-o", ",".join(fields))
            rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]
            if rows and rows[-1]["State"].startswith(FINAL_STATES):
                return rows[-1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"sacct has no final state for job {job_id} after {timeout}s: {rows}")
            time.sleep(0.3)


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def _unavailable(reason: str) -> None:
    if os.environ.get("VPR_SLURM_REQUIRED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _cluster(state: Path, nodes: int, port: int, *options: str) -> Iterator[SlurmCluster]:
    if sys.platform != "linux" or os.geteuid() != 0:
        _unavailable("a local Slurm cluster needs Linux and root (packages, munge/MariaDB users, mknod)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        _unavailable("Slurm is not installed and apt-get is unavailable to install it")
    script_env = {**os.environ, "VPR_SLURM_PORT": str(port)}
    state_arg = ["--state", str(state)]
    was_running = subprocess.run([START, *state_arg, "--status"], env=script_env).returncode == 0
    try:
        proc = subprocess.run([START, *state_arg, "--nodes", str(nodes), *options], env=script_env,
                              capture_output=True, text=True, timeout=900)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        parts = [out.decode(errors="replace") if isinstance(out, bytes) else out
                 for out in (exc.stdout, exc.stderr) if out]
        output, rc = "".join(parts) + "\n(start-cluster.sh timed out)", -1
    if rc != 0:
        if not was_running:  # stop what did start; the logs stay in the state directory
            subprocess.run([STOP, *state_arg], env=script_env, capture_output=True, timeout=120)
        _unavailable(f"the {nodes}-node Slurm test cluster could not be started "
                     f"(start-cluster.sh exit {rc}):\n{_tail(output)}")
    info = _read_env(state / "env")
    # Without the variables of an outer Slurm job (pytest run inside one), which sbatch/srun would obey.
    outer = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_"))}
    try:
        yield SlurmCluster(state=state, env={**outer, **info}, partition=info["VPR_SLURM_PARTITION"],
                           account=info["VPR_SLURM_ACCOUNT"], nodes=info["VPR_SLURM_NODE_NAMES"].split(","),
                           system_conf=info["VPR_SLURM_SYSTEM_CONF"])
    finally:
        if not was_running:
            keep = os.environ.get("VPR_SLURM_KEEP") == "1"
            _stopping.append(subprocess.Popen([STOP, *state_arg, *([] if keep else ["--purge"])],
                                              env=script_env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """One node `localhost` (32 CPUs, 256 GB, four fake GPUs declared), accounting on; state in
    $VPR_SLURM_STATE or /tmp/vpr-slurm, the default of start-cluster.sh, so a cluster started by hand is
    reused (start it with the same --gpus/--cpus/--mem to run the workflow tests)."""
    state = Path(os.environ.get("VPR_SLURM_STATE", "/tmp/vpr-slurm"))
    yield from _cluster(state, 1, int(os.environ.get("VPR_SLURM_PORT", "16817")), "--system-conf",
                        *PROFILE_SIZED)


@pytest.fixture(scope="session")
def slurm_cluster_2nodes() -> Iterator[SlurmCluster]:
    """Nodes `node1` (10.200.0.2) and `node2` (10.200.0.3), each slurmd in its own network namespace; a
    second cluster with its own state directory and ports, so it can run beside `slurm_cluster`."""
    state = Path(os.environ.get("VPR_SLURM_STATE_2NODES", "/tmp/vpr-slurm-2nodes"))
    yield from _cluster(state, 2, int(os.environ.get("VPR_SLURM_PORT_2NODES", "16827")))
