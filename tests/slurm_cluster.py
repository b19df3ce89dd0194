"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd started from
Debian's packages (``apt-get install slurmctld slurmd slurm-client munge``) in a folder of their
own, and stopped afterwards.

The node is this machine with its real CPUs and memory (``slurmd -C``); its daemons listen on
free 127.0.0.1 ports and keep their state, spool, logs and munge socket in the folder, so they
touch nothing of a system SLURM and two test sessions can each run one. Client commands and
the jobs find the cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`), which sbatch
passes on to the jobs. No accounting storage: ``sacct`` says so, and submitit, which asks it
for job states, warns and goes on.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

# Where Debian installs them; the client commands come from PATH.
DAEMONS = {
    "munged": "/usr/sbin/munged",
    "slurmctld": "/usr/sbin/slurmctld",
    "slurmd": "/usr/sbin/slurmd",
}
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
PACKAGES = "slurmctld slurmd slurm-client munge"
START_SECONDS = 60

CONF = """\
ClusterName=upsampler-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={folder}/munge.socket,cred_expire=5
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Test pending jobs every few seconds (default 60 s), so a requeued job restarts soon after it may
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """What this machine lacks to run the cluster, or None when it has everything."""
    absent = [name for name, path in DAEMONS.items() if not os.access(path, os.X_OK)]
    absent += [name for name in CLIENTS if shutil.which(name) is None]
    if absent:
        return f"no {', '.join(absent)} (apt-get install -y {PACKAGES})"
    if os.geteuid() != 0:
        return "not root (slurmd must run as root)"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlurmCluster:
    """munged, slurmctld and slurmd of one node, configured in ``folder`` (which must be
    reachable by every user: munged refuses a socket whose path others cannot traverse)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.processes: dict[str, subprocess.Popen] = {}

    def node_line(self) -> str:
        """``NodeName=<host> CPUs=.. RealMemory=..`` as slurmd detects this machine."""
        out = subprocess.run(
            [DAEMONS["slurmd"], "-C"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        return next(line for line in out.splitlines() if line.startswith("NodeName="))

    def start(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        key = self.folder / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.node = self.node_line()
        self.host = self.node.split()[0].partition("=")[2]
        self.conf.write_text(
            CONF.format(
                host=self.host,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                folder=self.folder,
                node=self.node,
            )
        )
        folder = self.folder
        self._daemon(
            "munged",
            "-F",
            f"--socket={folder}/munge.socket",
            f"--key-file={key}",
            f"--pid-file={folder}/munged.pid",
            f"--seed-file={folder}/munged.seed",
            f"--log-file={folder}/log/munged.log",
        )
        self._wait(lambda: (folder / "munge.socket").exists(), "munged's socket")
        self._daemon("slurmctld", "-D", "-i")
        self._daemon("slurmd", "-D")
        self._wait(self._node_idle, "the node to be idle")

    def _daemon(self, name: str, *args: str) -> None:
        with open(self.folder / "log" / f"{name}.out", "w") as out:
            self.processes[name] = subprocess.Popen(
                [DAEMONS[name], *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.folder,
            )

    def _node_idle(self) -> bool:
        state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
        return state == "idle"

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}): {self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {START_SECONDS} s: {self.logs()}")
            time.sleep(0.2)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def jobs(self) -> list[str]:
        """``<job id> <state>`` of every job the controller still lists (array tasks apart)."""
        out = self.run("squeue", "-h", "-r", "-o", "%i %T", check=False).stdout
        return out.split("\n")[:-1] if out else []

    def logs(self) -> str:
        """The daemons' last log lines, for a failure message."""
        parts = []
        for path in sorted((self.folder / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel what is still queued or running, then stop the daemons (slurmd first)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--partition=test", check=False)
            deadline = time.monotonic() + 60
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
