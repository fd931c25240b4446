"""Hosts for the chaos harness: one network namespace per node, veth pairs to a bridge in the
root namespace, nftables tables in the node namespaces for cut links, tbf qdiscs for slow
links, and a small loop-mounted ext4 filesystem per node for its data directory (disk full).

Everything is named with the run's prefix (`rbc<hex>`), recorded in a cleanup stack the moment
it exists, and removed in reverse order by `Infra.cleanup()` (called from try/finally, atexit
and the signal handlers in chaos.py). Only the harness's own namespaces, links and mounts are
ever touched; `find_leftovers()` looks for objects of the `rbc` family only.
"""

import errno
import os
import re
import shutil
import subprocess
import sys
import time

FAMILY = "rbc"
STATE_ROOT = "/tmp/ringbroker-chaos"
SUBNET = "10.251.0"
BRIDGE_ADDR = f"{SUBNET}.254"


def run(cmd, check=True, input=None, quiet=False):
    """Runs a command (a list), returns its stdout; raises with stderr on failure."""
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def node_addr(n):
    return f"{SUBNET}.{n}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_leftovers():
    """Objects of the `rbc` family whose owning run is gone: (description, remover) pairs;
    and the owner pids of runs still alive (their objects are not leftovers)."""
    alive_runs = set()
    owners = {}
    if os.path.isdir(STATE_ROOT):
        for name in os.listdir(STATE_ROOT):
            owner = os.path.join(STATE_ROOT, name, "owner.pid")
            try:
                pid = int(open(owner).read().strip())
            except (OSError, ValueError):
                pid = None
            owners[name] = pid
            if pid is not None and _pid_alive(pid):
                alive_runs.add(name)
    pattern = re.compile(rf"^({FAMILY}[0-9a-f]{{4}})-")
    found = []
    for ns in run(["ip", "netns", "list"]).split("\n"):
        name = ns.split(" ")[0]
        m = pattern.match(name)
        if m and m.group(1) not in alive_runs:
            found.append((f"network namespace {name}", ["ip", "netns", "del", name]))
    for line in run(["ip", "-o", "link", "show"]).split("\n"):
        parts = line.split(": ")
        if len(parts) < 2:
            continue
        name = parts[1].split("@")[0]
        m = pattern.match(name)
        if m and m.group(1) not in alive_runs:
            found.append((f"link {name}", ["ip", "link", "del", name]))
    with open("/proc/mounts") as mounts:
        for line in mounts:
            target = line.split(" ")[1]
            if target.startswith(STATE_ROOT + "/"):
                run_id = target[len(STATE_ROOT) + 1:].split("/")[0]
                if run_id not in alive_runs:
                    found.append((f"mount {target}", ["umount", "-l", target]))
    # Broker processes of a dead run: their command line names the run's state directory.
    for pid_dir in os.listdir("/proc"):
        if not pid_dir.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{pid_dir}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        text = b" ".join(cmdline).decode(errors="replace")
        # (workload clients name the results directory, /tmp/ringbroker-chaos-results/<run>/)
        m = re.search(rf"{STATE_ROOT}(?:-results)?/({FAMILY}[0-9a-f]{{4}})/", text)
        if m and m.group(1) not in alive_runs and int(pid_dir) != os.getpid():
            found.append((f"process {pid_dir} ({text[:80]})", ["kill", "-KILL", pid_dir]))
    found.sort(key=lambda item: 0 if item[0].startswith("process") else 1)
    dead_dirs = [name for name in owners if name not in alive_runs]
    return found, alive_runs, dead_dirs


def remove_leftovers(log):
    found, alive, dead_dirs = find_leftovers()
    for desc, cmd in found:
        log(f"removing leftover of an earlier run: {desc}")
        run(cmd, check=False)
    for name in dead_dirs:
        path = os.path.join(STATE_ROOT, name)
        log(f"removing leftover state directory {path}")
        shutil.rmtree(path, ignore_errors=True)
    return alive


class Infra:
    """The namespaces, bridge, links, nft tables and loop filesystems of one harness process."""

    def __init__(self, run_id, nodes, disk_mb, log):
        self.run_id = run_id
        self.nodes = list(nodes)
        self.disk_mb = disk_mb
        self.log = log
        self.state_dir = os.path.join(STATE_ROOT, run_id)
        self.bridge = f"{run_id}-br"
        self.table = run_id
        self.undo = []  # (description, callable), undone in reverse
        self.slowed = set()
        self.fillers = {}

    # -- naming -------------------------------------------------------------------------------

    def ns(self, n):
        return f"{self.run_id}-n{n}"

    def data_mount(self, n):
        return os.path.join(self.state_dir, f"disk-{n}")

    def _push(self, desc, fn):
        self.undo.append((desc, fn))

    # -- setup ----------------------------------------------------------------------------------

    def setup(self):
        os.makedirs(self.state_dir, exist_ok=False)
        self._push(f"state dir {self.state_dir}",
                   lambda: shutil.rmtree(self.state_dir, ignore_errors=True))
        with open(os.path.join(self.state_dir, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        routes = run(["ip", "route", "show", f"{SUBNET}.0/24"])
        if routes.strip():
            raise RuntimeError(f"{SUBNET}.0/24 is already routed here ({routes.strip()}): "
                               "another chaos run, or someone else's network")
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._push(f"bridge {self.bridge}", lambda: run(["ip", "link", "del", self.bridge],
                                                         check=False))
        run(["ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for n in self.nodes:
            ns = self.ns(n)
            run(["ip", "netns", "add", ns])
            self._push(f"network namespace {ns}", lambda ns=ns: run(["ip", "netns", "del", ns],
                                                                    check=False))
            host_end, node_end = f"{self.run_id}-v{n}", f"{self.run_id}-p{n}"
            run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", node_end])
            self._push(f"veth {host_end}", lambda h=host_end: run(["ip", "link", "del", h],
                                                                  check=False))
            run(["ip", "link", "set", node_end, "netns", ns])
            run(["ip", "-n", ns, "link", "set", node_end, "name", "eth0"])
            run(["ip", "-n", ns, "addr", "add", f"{node_addr(n)}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "link", "set", host_end, "master", self.bridge, "up"])
            run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=(
                f"table inet {self.table} {{\n"
                "  chain input { type filter hook input priority 0; policy accept; }\n"
                "  chain output { type filter hook output priority 0; policy accept; }\n"
                "}\n"))
            self._setup_disk(n)
        self._check_reachable()

    def _setup_disk(self, n):
        image = os.path.join(self.state_dir, f"disk-{n}.img")
        mount = self.data_mount(n)
        os.makedirs(mount)
        with open(image, "wb") as f:
            f.truncate(self.disk_mb * 1024 * 1024)
        # -m 0: no blocks reserved for root (the broker runs as root and would use them).
        run(["mkfs.ext4", "-q", "-F", "-m", "0", image])
        run(["mount", "-o", "loop", image, mount])
        self._push(f"mount {mount}", lambda m=mount: self._umount(m))

    def _umount(self, mount):
        for _ in range(20):
            if subprocess.run(["umount", mount], capture_output=True).returncode == 0:
                return
            time.sleep(0.25)
        run(["umount", "-l", mount], check=False)

    def tcp_ok(self, src, dst, port=19999, timeout=1.5):
        """Whether a TCP connection from node src (None: the root namespace) reaches node dst:
        a one-shot listener in dst's namespace, a connect from src's."""
        listener = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(dst), sys.executable, "-c",
             "import socket,sys\n"
             f"s=socket.create_server(('{node_addr(dst)}',{port}))\n"
             f"s.settimeout({timeout + 1})\n"
             "print('up',flush=True)\n"
             "try:\n s.accept()\nexcept OSError:\n pass\n"],
            stdout=subprocess.PIPE, text=True)
        try:
            listener.stdout.readline()
            code = ("import socket\n"
                    f"socket.create_connection(('{node_addr(dst)}',{port}),timeout={timeout})")
            cmd = [sys.executable, "-c", code]
            if src is not None:
                cmd = ["ip", "netns", "exec", self.ns(src)] + cmd
            return subprocess.run(cmd, capture_output=True).returncode == 0
        finally:
            listener.kill()
            listener.wait()

    def _check_reachable(self):
        for n in self.nodes:
            if not self.tcp_ok(None, n):
                raise RuntimeError(f"node {n} ({node_addr(n)}) unreachable over the bridge")

    def cleanup(self):
        while self.undo:
            desc, fn = self.undo.pop()
            try:
                fn()
            except Exception as err:  # cleanup goes on whatever one step does
                self.log(f"cleanup of {desc} failed: {err}")

    # -- faults ---------------------------------------------------------------------------------

    def _nft(self, n, script):
        run(["ip", "netns", "exec", self.ns(n), "nft", "-f", "-"], input=script)

    def drop(self, src, dst):
        """Packets from node src to node dst are dropped (one way): in src's output chain."""
        self._nft(src, f"add rule inet {self.table} output ip daddr {node_addr(dst)} drop\n")

    def heal_links(self):
        for n in self.nodes:
            self._nft(n, f"flush chain inet {self.table} output\n"
                         f"flush chain inet {self.table} input\n")

    def rules(self, n):
        return run(["ip", "netns", "exec", self.ns(n), "nft", "list", "table", "inet",
                    self.table])

    def slow(self, n, rate="512kbit"):
        """A lagging node: both directions of its link through a tbf bandwidth limit."""
        args = ["root", "tbf", "rate", rate, "burst", "16kb", "latency", "500ms"]
        run(["tc", "-n", self.ns(n), "qdisc", "replace", "dev", "eth0"] + args)
        run(["tc", "qdisc", "replace", "dev", f"{self.run_id}-v{n}"] + args)
        self.slowed.add(n)

    def heal_slow(self):
        for n in list(self.slowed):
            run(["tc", "-n", self.ns(n), "qdisc", "del", "dev", "eth0", "root"], check=False)
            run(["tc", "qdisc", "del", "dev", f"{self.run_id}-v{n}", "root"], check=False)
            self.slowed.discard(n)

    def fill_disk(self, n):
        """Fills node n's filesystem to the last block; returns the bytes taken."""
        path = os.path.join(self.data_mount(n), "chaos-filler")
        taken = 0
        st = os.statvfs(self.data_mount(n))
        with open(path, "wb", buffering=0) as f:
            big = max(0, st.f_bavail * st.f_frsize - (1 << 20))
            if big:
                os.posix_fallocate(f.fileno(), 0, big)
                taken = big
            chunk = b"\0" * 4096
            f.seek(taken)
            try:
                while True:
                    f.write(chunk)
                    taken += len(chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
        self.fillers[n] = path
        return taken

    def heal_disks(self):
        for n, path in list(self.fillers.items()):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            del self.fillers[n]

    def heal_all(self):
        self.heal_links()
        self.heal_slow()
        self.heal_disks()
