"""A real single-node SLURM cluster in a folder, for tests and for trying sweeps on one machine.

    python tests/slurm_cluster.py start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
    python tests/slurm_cluster.py stop DIR

Needs Debian's slurmctld, slurmd, slurm-client and munge packages, and root (slurmd runs jobs
as their users). No systemd: munged, slurmctld and slurmd are started here with their pid files
in DIR and stopped by those PIDs (never by name). The node claims `cpus` CPUs whatever the
machine has (`SlurmdParameters=config_overrides`), so several tiny jobs can run at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

NEEDED = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged", "munge", "unmunge")
MUNGE_PID = Path("/run/munge/munged.pid")


def missing_tools() -> list[str]:
    return [tool for tool in NEEDED if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]


def why_unavailable() -> str | None:
    """None when a cluster can be started here, else the reason."""
    missing = missing_tools()
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd "
                f"slurm-client munge")
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, cpus: int) -> Path:
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=dgheads",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={port}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge",
        # a requeued job waits cred_expire seconds before it may start again (default 120)
        "AuthInfo=cred_expire=10",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "JobRequeue=1", "KillWait=5", "MinJobAge=600",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "MailProg=/bin/true", "SlurmUser=root", "SlurmdUser=root", "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} "
        f"ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    return conf


def _run(*cmd: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=check, timeout=60)


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def start_munge(folder: Path) -> None:
    """munged as the munge user; remembered in DIR/munged.pid only when this script started it."""
    if _alive(MUNGE_PID):
        return
    run_dir = MUNGE_PID.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        _run("runuser", "-u", "munge", "--", "/usr/sbin/mungekey", "--create")
    _run("runuser", "-u", "munge", "--", "/usr/sbin/munged")
    for _ in range(50):
        if _alive(MUNGE_PID):
            break
        time.sleep(0.1)
    shutil.copy(MUNGE_PID, folder / "munged.pid")
    check = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"munge does not work: {check.stderr.strip()}")


def start(folder: Path, cpus: int = 8, timeout: float = 30.0) -> dict[str, str]:
    """Start munged, slurmctld and slurmd; return the environment that points clients at them."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    conf = write_config(folder, cpus)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    start_munge(folder)
    _run(_sbin("slurmctld"), "-f", str(conf), "-c", env=env)
    _run(_sbin("slurmd"), "-f", str(conf), env=env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = _run("sinfo", "-h", "-N", "-o", "%T", env=env, check=False).stdout.strip()
        if state == "idle":
            return {"SLURM_CONF": str(conf)}
        time.sleep(0.3)
    stop(folder)
    raise RuntimeError(f"the SLURM node did not become idle in {timeout:.0f} s (state {state!r}); "
                       f"see {folder / 'slurmctld.log'} and {folder / 'slurmd.log'}")


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def stop(folder: Path, timeout: float = 30.0) -> None:
    """Cancel every job, wait for an empty queue, then stop the daemons by their PIDs."""
    folder = folder.resolve()
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    if _alive(folder / "slurmctld.pid"):
        _run("scancel", "--user", str(os.getuid()), env=env, check=False)
        deadline = time.time() + timeout
        while time.time() < deadline and _run("squeue", "-h", env=env, check=False).stdout.strip():
            time.sleep(0.3)
    for name in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
        pid = _alive(folder / name)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cpus", type=int, default=8)
    args = parser.parse_args()
    if args.action == "start":
        reason = why_unavailable()
        if reason:
            sys.exit(f"error: {reason}")
        env = start(args.folder, args.cpus)
        print(f"export SLURM_CONF={env['SLURM_CONF']}")
    else:
        stop(args.folder)


if __name__ == "__main__":
    main()
