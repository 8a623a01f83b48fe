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


def write_config(folder: Path, cpus: int, nodes: list[tuple[str, str]] | None = None,
                 controller: str = "127.0.0.1") -> Path:
    """slurm.conf for one node on this machine's name at 127.0.0.1 (default), or for `nodes`
    (name, address) with the controller at `controller`: spool, pid and log files per node (%n)."""
    host = socket.gethostname().split(".")[0]
    (folder / "state").mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in nodes] if nodes else [host]
    for name in names:
        (folder / f"spool-{name}").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = folder / "slurm.conf"
    node_lines = [f"NodeName={name} NodeHostname={name} NodeAddr={addr} CPUs={cpus} Boards=1 SocketsPerBoard=1 "
                  f"CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN"
                  for name, addr in (nodes or [(host, "127.0.0.1")])]
    conf.write_text("\n".join([
        "ClusterName=dgheads",
        f"SlurmctldHost={host}({controller})",
        f"SlurmctldPort={port}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge",
        # a requeued job waits cred_expire seconds before it may start again (default 120)
        "AuthInfo=cred_expire=10",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "JobRequeue=1", "KillWait=5", "MinJobAge=600",
        # a node that stops answering is DOWN after 10 s (default 300), its jobs requeued or ended
        "SlurmdTimeout=10",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "MailProg=/bin/true", "SlurmUser=root", "SlurmdUser=root", "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool-%n'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd-%n.log'}",
        *node_lines,
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
    try:
        wait_idle(env, 1, timeout)
    except RuntimeError:
        stop(folder)
        raise
    return {"SLURM_CONF": str(conf)}


def wait_idle(env: dict, nodes: int, timeout: float = 30.0) -> None:
    """Wait until `nodes` nodes are idle."""
    deadline, states = time.time() + timeout, ""
    while time.time() < deadline:
        states = _run("sinfo", "-h", "-N", "-o", "%T", env=env, check=False).stdout.split()
        if states.count("idle") == nodes:
            return
        time.sleep(0.3)
    folder = Path(env["SLURM_CONF"]).parent
    raise RuntimeError(f"{nodes} SLURM node(s) did not become idle in {timeout:.0f} s (states {states}); "
                       f"see the logs in {folder}")


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
    for name in [p.name for p in folder.glob("slurmd-*.pid")] + ["slurmctld.pid", "munged.pid"]:
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


# ---------------------------------------------------------------- two nodes, each in a network namespace
# The controller on a bridge of this machine, each slurmd in a network namespace (and a UTS namespace:
# its own hostname) of its own, joined to the bridge by a veth pair. Addresses come from 198.18.0.0/15
# (RFC 2544, benchmarking: never routed); nothing else is routed, so traffic stays between these.
BRIDGE = "dgheads-br"
CONTROLLER = "198.18.0.1"
NODES = (("dgn1", "198.18.0.11"), ("dgn2", "198.18.0.12"))


def why_no_two_nodes() -> str | None:
    """None when a two-node cluster can be started here, else the reason."""
    missing = [tool for tool in ("ip", "nsenter", "unshare") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} missing: apt-get install iproute2 util-linux"
    return why_unavailable()


def _netns(node: str) -> str:
    return f"dgheads-{node}"


def _network_up() -> None:
    _network_down()  # what a killed run left (these names only)
    host = socket.gethostname().split(".")[0]
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{CONTROLLER}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    for node, address in NODES:
        ns, veth = _netns(node), f"dgh-{node}"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", veth, "master", BRIDGE)
        _run("ip", "link", "set", veth, "up")
        _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        # mounted over /etc/hosts in the node's mount namespace: node names resolve to the
        # namespaces' addresses there (MASTER_ADDR = the first node's name, gloo's own hostname)
        hosts = Path("/etc/netns") / ns / "hosts"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in NODES) + f"{CONTROLLER} {host}\n")


def _network_down() -> None:
    for node, _ in NODES:
        ns = _netns(node)
        if (Path("/run/netns") / ns).exists():
            kill_node(node)
            _run("ip", "netns", "del", ns, check=False)  # takes its end of the veth pair, so both
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    if Path("/etc/netns").is_dir() and not any(Path("/etc/netns").iterdir()):
        Path("/etc/netns").rmdir()
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "del", BRIDGE, check=False)


def start_node(folder: Path, node: str) -> None:
    """slurmd for `node` in its network namespace, with the node's name as its hostname."""
    conf = folder / "slurm.conf"
    # not `ip netns exec`: it remounts /sys, without the cgroup file system slurmd needs
    _run("nsenter", f"--net=/run/netns/{_netns(node)}", "unshare", "--uts", "--mount", "sh", "-c",
         f"mount --bind /etc/netns/{_netns(node)}/hosts /etc/hosts && hostname {node} && "
         f"exec {_sbin('slurmd')} -f {conf} -N {node}", env={**os.environ, "SLURM_CONF": str(conf)})


def kill_node(node: str) -> None:
    """The node is lost: SIGKILL to every process in its namespace (its slurmd, steps, ranks)."""
    pids = _run("ip", "netns", "pids", _netns(node), check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def start_two_nodes(folder: Path, cpus: int = 4, timeout: float = 30.0) -> dict[str, str]:
    """munged and slurmctld here, a slurmd in each of two namespaces; the clients' environment."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    conf = write_config(folder, cpus, nodes=list(NODES), controller=CONTROLLER)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        start_munge(folder)
        _network_up()
        _run(_sbin("slurmctld"), "-f", str(conf), "-c", env=env)
        for node, _ in NODES:
            start_node(folder, node)
        wait_idle(env, len(NODES), timeout)
    except (RuntimeError, subprocess.SubprocessError):
        stop_two_nodes(folder)
        raise
    return {"SLURM_CONF": str(conf)}


def stop_two_nodes(folder: Path) -> None:
    stop(folder)
    _network_down()


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
