"""A one-node Slurm cluster on loopback for the tests (Debian's ``slurm-wlm`` and ``munge``; ``make test`` installs
them): its own munge key and socket, ``slurm.conf``, ports and state in a temporary folder, nothing of the system's
configuration used. Clients reach it through ``SLURM_CONF`` (see :attr:`SlurmCluster.env`).

Fixture: ``slurm_cluster`` (one per test session). Without the binaries, or when the cluster does not come up, its
tests are skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NODE = "lsdnode"
PARTITION = "lsdtest"
MARKER = "LSD_NM_TEST_SLURM_CLUSTER"
"""Set in the daemons' environment (their job-step daemons inherit it): how leftovers are found at the end."""
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@dataclass(frozen=True)
class SlurmCluster:
    """A running one-node cluster."""

    folder: Path
    """Its configuration, state and logs."""
    conf: Path
    """Its ``slurm.conf``."""
    name: str
    """Its ``ClusterName``."""
    cpus: int
    """The node's CPUs."""

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with ``SLURM_CONF`` pointing at the cluster (for srun, squeue, scancel)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        """Run a Slurm client command against the cluster; its stdout."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def jobs(self) -> list[str]:
        """The ids of the cluster's jobs that are running."""
        return self.run("squeue", "-h", "-t", "R", "-o", "%i").split()

    def allocations(self) -> list[str]:
        """The ids of every job the controller has allocated so far (from its log: no accounting here)."""
        log = (self.folder / "slurmctld.log").read_text(errors="replace")
        return re.findall(r"_slurm_rpc_allocate_resources JobId=(\d+)", log)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a Slurm cluster that cannot start is a failure, not a skip)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _detected_cpus(slurmd: str) -> int:
    """The CPUs slurmd finds on this machine (``slurmd -C``), else the ones this process may use."""
    done = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=30)
    found = re.search(r"\bCPUs=(\d+)", done.stdout)
    return int(found.group(1)) if found else len(os.sched_getaffinity(0))


def _config(folder: Path, name: str, cpus: int) -> str:
    host = socket.gethostname().split(".")[0]
    return "\n".join([
        f"ClusterName={name}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder}/munge.socket",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid",
        f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log",
        f"SlurmdLogFile={folder}/slurmd.log",
        # no cgroups: processes tracked by parentage, no task confinement, no accounting
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "MpiDefault=none",
        "ReturnToService=2",
        "MailProg=/bin/true",
        f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])  # fmt: skip


def _marked(marker: str) -> list[int]:
    """The pids of live processes whose environment holds ``MARKER=marker``."""
    found, needle = [], f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A one-node Slurm cluster (slurmctld + slurmd as root, munge) on 127.0.0.1, idle and ready for ``srun``."""
    binaries = {b: shutil.which(b, path=SBIN) for b in ("munged", "slurmctld", "slurmd", "srun", "sinfo", "scancel")}
    missing = [b for b, path in binaries.items() if path is None]
    if missing:
        _unavailable(f"Slurm/munge binaries missing ({', '.join(missing)}): apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        _unavailable("the test Slurm cluster runs its daemons as root (SlurmdUser=root): run the tests as root")
    # short: unix socket paths are limited to ~107 bytes
    folder = Path(tempfile.mkdtemp(prefix="slurm.", dir="/tmp"))
    name = f"lsdtest{os.getpid()}"
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    cpus = _detected_cpus(binaries["slurmd"])
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, name, cpus))
    env = {**os.environ, "SLURM_CONF": str(conf), MARKER: name}
    cluster = SlurmCluster(folder, conf, name, cpus)
    daemons: list[subprocess.Popen] = []

    def start(*command: str, log: str) -> None:
        with open(folder / log, "w") as out:
            daemons.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start(binaries["munged"], "--foreground", "--force", f"--key-file={key}", f"--socket={folder}/munge.socket",
              f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed",
              log="munged.out")  # fmt: skip
        deadline = time.monotonic() + 10
        while not (folder / "munge.socket").exists() and daemons[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not (folder / "munge.socket").exists():
            _unavailable(f"munged did not start: {_tail(folder / 'munged.out')}")
        start(binaries["slurmctld"], "-D", "-i", "-f", str(conf), log="slurmctld.out")
        start(binaries["slurmd"], "-D", "-N", NODE, "-f", str(conf), log="slurmd.out")
        state, deadline = "", time.monotonic() + 60
        while state != "idle" and time.monotonic() < deadline:
            dead = [d.args[0] for d in daemons if d.poll() is not None]
            if dead:
                _unavailable(f"{', '.join(dead)} exited: {_tail(folder / 'slurmctld.out')}\n{_tail(folder / 'slurmd.out')}")
            try:
                state = cluster.run(binaries["sinfo"], "-h", "-N", "-n", NODE, "-o", "%t").strip()
            except (RuntimeError, subprocess.TimeoutExpired):
                state = ""
            time.sleep(0.5)
        if state != "idle":
            _unavailable(f"the Slurm node is not idle after 60 s (state '{state}'): {_tail(folder / 'slurmd.out')}")
        yield cluster
    finally:
        if len(daemons) == 3 and all(d.poll() is None for d in daemons):  # end the jobs left, then the daemons
            subprocess.run([binaries["scancel"], "--partition", PARTITION], env=env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if not cluster.run("squeue", "-h", "-o", "%i").strip():
                        break
                except (RuntimeError, subprocess.TimeoutExpired):
                    break
                time.sleep(0.2)
        for daemon in reversed(daemons):
            _stop(daemon)
        for pid in _marked(name):  # job-step daemons (slurmstepd) whose step did not end
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(folder, ignore_errors=True)
