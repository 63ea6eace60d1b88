"""Run the real GIMP 3 headless from tests: a Debian chroot per release, built on demand, and ``gimp-console``.

Debian 12 ships GIMP 2.10, so the tests run GIMP 3 from a newer Debian release inside a chroot made with
``debootstrap --variant=minbase RELEASE`` plus ``apt-get install --no-install-recommends gimp
gir1.2-gimp-3.0 python3-gi`` (one to two minutes on two cores with a nearby mirror): ``trixie`` has GIMP 3.0
(730 MB), ``forky`` GIMP 3.2 (1.0 GB) (:data:`RELEASES`). The chroot deliberately has no ``python3-websockets`` /
``python3-msgpack``: the plug-in must run on what the installer vendors. Each release's chroot lives outside
any git work tree, at ``<folder>/<release>-gimp3`` where the folder is :data:`DEFAULT_FOLDER` or
``$GIMP_INPAINT_CHROOTS``, is built once (marker files record each finished stage) and reused afterwards.
The GIMP binaries' names (``gimp-console-3.0``, ``gimp-3.2``, …) come from the GIMP version installed in the
chroot.

A release this host's debootstrap has no script for yet (bookworm's has none for ``forky``) is bootstrapped
with its ``sid`` script, which serves testing and unstable alike. ``apt-get update`` in the chroot ignores the
Release files' ``Valid-Until``: a snapshot mirror's testing Release can be past it.

Every run happens in a private mount namespace (``unshare --mount --propagation private``): the mounts
(``/proc``, ``/dev``, the I/O folder, the plug-in folders) exist only for that process tree and vanish with
it, even when it is killed. The chroot shares the host's network namespace, so a daemon listening on
``127.0.0.1`` outside is reachable from plug-ins inside.

A batch file is Python run by GIMP's ``python-fu-eval`` interpreter (the chroot's ``/usr/bin/python3``);
it sees ``sys.argv == [its path inside the chroot, *args]``, its own folder (read-only, first on
``sys.path``, so it can import its neighbours, this module included) and :data:`IO_MOUNT` (the host I/O
folder, read-write). ``gimp-console`` exits 0 when the batch finished, 64 when it raised (traceback on stderr).

GIMP's user configuration folder (``GIMP3_DIRECTORY``) is kept inside the chroot between runs, one per
plug-in-path: with its cached ``pluginrc`` GIMP starts in about 2.5 s instead of 8 s. The alternate
gimprc that adds our plug-in folders is rewritten only when its lines change, because GIMP rewrites
that file on exit and a file without its ``config-version`` makes GIMP query all 128 plug-ins again.

Command line (as root), for trying things by hand::

    python tests/gimp/gimp_harness.py [--release forky] build
    python tests/gimp/gimp_harness.py [--release forky] run [--io DIR] [--plugin-dir DIR]... BATCH.py [ARG...]
    python tests/gimp/gimp_harness.py [--release forky] exec CMD [ARG...]

``--release`` defaults to ``trixie`` (GIMP 3.0). ``run``'s options come before ``BATCH.py``: everything after it
is the batch's own arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

FOLDER_ENV = "GIMP_INPAINT_CHROOTS"
DEFAULT_FOLDER = Path("/var/tmp/gimp-inpaint")
"""Where the chroots live (``<release>-gimp3`` each) unless ``$GIMP_INPAINT_CHROOTS`` names another folder."""
RELEASES = {"trixie": "3.0", "forky": "3.2"}
"""The Debian releases the tests run GIMP from, each with the GIMP series it carries: trixie (Debian 13) has
GIMP 3.0, forky (testing) GIMP 3.2. The tests check the series; the harness reads the version from the chroot."""
DEFAULT_RELEASE = "trixie"
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
PACKAGES = ("gimp", "gir1.2-gimp-3.0", "python3-gi")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEBOOTSTRAP_MARKER = ".gimp3-debootstrap-done"
"""Present once debootstrap finished (same name as the shared recipe uses, so its chroots are reused)."""
PACKAGES_MARKER = ".gimp3-packages-done"
"""Holds the space-separated package list once ``apt-get install`` finished."""
IO_MOUNT = "/mnt/io"
BATCH_MOUNT = "/mnt/batch"
"""Inside the chroot: the batch file's host folder (read-only), first on the batch's ``sys.path``."""
PLUGIN_MOUNT = "/mnt/plug-ins"
CONFIG_BASE = "/var/lib/gimp-inpaint-tests"
"""Inside the chroot: GIMP's warm user configuration folders live below this."""
BATCH_ARGS_ENV = "GIMP_INPAINT_BATCH_ARGS"
SUMMARY_PREFIX = "GIMP_INPAINT_SUMMARY"
"""A batch prints its result as one line ``GIMP_INPAINT_SUMMARY {json}`` (see :meth:`RunResult.summary`)."""
TIMEOUT_EXIT = 124
""":attr:`RunResult.returncode` of a run killed at its time limit (as coreutils' ``timeout`` reports it)."""


class GimpUnavailable(RuntimeError):
    """A prerequisite for running GIMP 3 is missing: not root, no ``unshare``/``chroot``, or the chroot
    cannot be built (debootstrap or apt failed, e.g. no mirror reachable). The message says which."""


@dataclass(frozen=True)
class RunResult:
    """What one command inside the chroot did: exit status (124 on timeout), output, wall time in seconds."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def summary(self) -> dict:
        """The JSON object the batch printed on its last ``GIMP_INPAINT_SUMMARY {json}`` line.

        Raises:
            LookupError: no such line (the message holds the run's output).
        """
        for line in reversed(self.stdout.splitlines()):
            if line.startswith(SUMMARY_PREFIX + " "):
                return json.loads(line[len(SUMMARY_PREFIX) + 1:])
        raise LookupError(f"no {SUMMARY_PREFIX} line in GIMP's output\n{self.describe()}")

    def describe(self) -> str:
        """Exit status, time and both outputs, for assertion messages."""
        return (f"exit status {self.returncode} after {self.seconds:.1f} s\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


def host_mirror() -> str:
    """The Debian mirror the host's apt already uses (deb822 ``URIs:`` first, then ``sources.list``).

    Only a mirror reachable from this machine is useful, and the host's own is the best guess; falls back
    to :data:`FALLBACK_MIRROR`.
    """
    lines = [line for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) for line in _read_lines(path)
             if line.startswith("URIs:")]
    lines += [line for line in _read_lines(Path("/etc/apt/sources.list")) if line.startswith("deb ")]
    for word in " ".join(lines).split():
        if "://" in word and word.rstrip("/").endswith("/debian"):
            return word
    return FALLBACK_MIRROR


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines()]
    except OSError:
        return []


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace (from /proc/self/mountinfo)."""
    prefix = str(path).rstrip("/") + "/"
    points = [line.split()[4] for line in _read_lines(Path("/proc/self/mountinfo")) if line]
    return [p for p in points if p == str(path) or p.startswith(prefix)]


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (serialises builds, and runs sharing a config folder)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_limited(argv: Sequence[str], timeout: float) -> RunResult:
    """Run ``argv`` in its own session; after ``timeout`` seconds SIGTERM its process group, SIGKILL 10 s later."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        code = TIMEOUT_EXIT
        err += f"\n[gimp_harness] killed after the {timeout:.0f} s time limit\n"
    return RunResult(code, out, err, time.monotonic() - start)


def _require_root_tools() -> None:
    if os.geteuid() != 0:
        raise GimpUnavailable("running GIMP 3 in a chroot needs root (chroot, mount, debootstrap)")
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            raise GimpUnavailable(f"the host has no {tool!r} command (util-linux / coreutils)")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise GimpUnavailable(f"cannot create a private mount namespace: {probe.stderr.strip()}")


def _inside_git_work_tree(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in [path, *path.parents])


class GimpChroot:
    """A Debian chroot with GIMP 3, and the means to run GIMP (or any command) inside it.

    Args:
        release: the Debian release (suite name) to bootstrap, e.g. a key of :data:`RELEASES`.
        root: the chroot folder; default ``<$GIMP_INPAINT_CHROOTS or DEFAULT_FOLDER>/<release>-gimp3``. Must not
            be inside a git work tree (it would add 730 MB to 1 GB of untracked files).
        mirror: Debian mirror for debootstrap; default :func:`host_mirror`.

    Raises:
        ValueError: ``root`` is ``/`` or inside a git work tree.
    """

    def __init__(self, release: str = DEFAULT_RELEASE, root: Path | None = None, mirror: str | None = None) -> None:
        self.release = release
        folder = Path(os.environ.get(FOLDER_ENV) or DEFAULT_FOLDER)
        self.root = Path(root or folder / f"{release}-gimp3").resolve()
        if self.root == Path("/") or len(self.root.parts) < 3:
            raise ValueError(f"refusing chroot path {self.root}")
        if _inside_git_work_tree(self.root):
            raise ValueError(f"the chroot {self.root} must not be inside a git work tree")
        self.mirror = mirror or host_mirror()
        self.packages = " ".join(PACKAGES)

    # ------------------------------------------------------------------ building
    def is_complete(self) -> bool:
        """True when debootstrap and the package installation both finished (marker files)."""
        marker = self.root / PACKAGES_MARKER
        return (self.root / DEBOOTSTRAP_MARKER).is_file() and marker.is_file() and \
            marker.read_text().strip() == self.packages

    def ensure_built(self, log: bool = True) -> float:
        """Build whatever stage of the chroot is missing; returns the seconds spent (0.0 when it was complete).

        Raises:
            GimpUnavailable: not root, no namespace tools, or debootstrap/apt failed (the log tail is in the
                message).
        """
        _require_root_tools()
        if self.is_complete():
            return 0.0
        start = time.monotonic()
        with _locked(self.root.parent / f".{self.root.name}.build.lock"):
            if not (self.root / DEBOOTSTRAP_MARKER).is_file():
                self._debootstrap(log)
            if not self.is_complete():
                self._install_packages(log)
        return time.monotonic() - start

    def _say(self, log: bool, text: str) -> None:
        if log:
            print(f"[gimp_harness] {text}", file=sys.stderr, flush=True)

    def _debootstrap(self, log: bool) -> None:
        if self.root.exists():
            if _mounts_below(self.root):
                raise GimpUnavailable(f"{self.root} is half built and has mounts below it; unmount them first")
            self._say(log, f"removing the incomplete chroot {self.root}")
            shutil.rmtree(self.root)
        if shutil.which("debootstrap") is None or not KEYRING.is_file():
            self._say(log, "installing debootstrap and debian-archive-keyring on the host")
            self._host_apt_install("debootstrap", "debian-archive-keyring")
        argv = ["debootstrap", "--variant=minbase", f"--keyring={KEYRING}", self.release, str(self.root),
                self.mirror]
        if not (DEBOOTSTRAP_SCRIPTS / self.release).exists():
            # a release newer than this debootstrap (bookworm's knows no forky): testing and unstable share
            # the sid script, which works for it
            argv.append(str(DEBOOTSTRAP_SCRIPTS / "sid"))
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._say(log, shlex.join(argv))
        result = _run_limited(argv, timeout=1800)
        if result.returncode != 0:
            raise GimpUnavailable(f"debootstrap failed ({result.returncode}): {_tail(result.stdout + result.stderr)}")
        (self.root / DEBOOTSTRAP_MARKER).touch()
        self._say(log, f"debootstrap done in {result.seconds:.1f} s")

    @staticmethod
    def _host_apt_install(*packages: str) -> None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
            done = subprocess.run(argv, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise GimpUnavailable(f"{' '.join(argv)} failed: {_tail(done.stdout + done.stderr)}")

    def _install_packages(self, log: bool) -> None:
        policy = self.root / "usr/sbin/policy-rc.d"        # never start services inside the chroot
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        with contextlib.suppress(OSError):
            shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
        # a snapshot mirror's testing Release can be past its Valid-Until ("Release file ... is expired")
        update = ["apt-get", "-o", "Acquire::Check-Valid-Until=false", "update", "-qq"]
        script = " && ".join(shlex.join(c) for c in (update, install, ["apt-get", "clean"]))
        self._say(log, f"{shlex.join(install)} (inside the chroot)")
        result = self.run_command(["sh", "-c", script], timeout=1800)
        if result.returncode != 0:
            raise GimpUnavailable(f"apt-get in the chroot failed ({result.returncode}): "
                                  f"{_tail(result.stdout + result.stderr)}")
        (self.root / PACKAGES_MARKER).write_text(self.packages + "\n")
        self._say(log, f"packages installed in {result.seconds:.1f} s")

    def gimp_version(self) -> str:
        """The upstream version of the chroot's ``gimp`` package (``"3.0.4"`` for ``3.0.4-3+deb13u10``).

        Raises:
            LookupError: the package is not installed in the chroot.
        """
        status = (self.root / "var/lib/dpkg/status").read_text()
        for paragraph in status.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line and line[0] != " ")
            if fields.get("Package") == "gimp" and fields.get("Status", "").endswith(" installed"):
                return fields["Version"].split(":")[-1].split("-")[0]
        raise LookupError(f"gimp is not installed in {self.root}")

    def gimp_binary(self, gui: bool = False) -> str:
        """The chroot's GIMP command for its GIMP version: ``gimp-console-3.0`` (``gimp-3.0`` with ``gui``) for
        GIMP 3.0.x, ``gimp-console-3.2`` for 3.2.x, and so on.

        Raises:
            LookupError: gimp is not installed, or the chroot has no binary of that name.
        """
        series = ".".join(self.gimp_version().split(".")[:2])
        name = f"gimp-{series}" if gui else f"gimp-console-{series}"
        if not (self.root / "usr/bin" / name).exists():
            raise LookupError(f"{self.root} has GIMP {self.gimp_version()} but no /usr/bin/{name}")
        return name

    # ------------------------------------------------------------------ running
    def _base_mounts(self) -> list[list[str]]:
        """What GIMP and apt need: /proc, /sys, /dev, /dev/pts and a fresh tmpfs for POSIX shared memory."""
        r = self.root
        return [["mount", "-t", "proc", "proc", f"{r}/proc"],
                ["mount", "--bind", "/sys", f"{r}/sys"],
                ["mount", "--bind", "/dev", f"{r}/dev"],
                ["mount", "--bind", "/dev/pts", f"{r}/dev/pts"],
                ["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", f"{r}/dev/shm"]]

    def _bind(self, source: Path, target: str, read_only: bool) -> list[list[str]]:
        inside = f"{self.root}{target}"
        Path(inside).mkdir(parents=True, exist_ok=True)
        commands = [["mount", "--bind", str(source.resolve()), inside]]
        if read_only:
            commands.append(["mount", "-o", "remount,bind,ro", inside])
        return commands

    def _in_namespace(self, mounts: list[list[str]], argv: Sequence[str], env: dict[str, str],
                      timeout: float) -> RunResult:
        """Run ``argv`` chrooted with a clean ``env``, after ``mounts``, in a private mount namespace."""
        chrooted = ["chroot", str(self.root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
        script = "\n".join(["set -e", *(shlex.join(m) for m in mounts), "exec " + shlex.join(chrooted)])
        return _run_limited(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script], timeout)

    def run_command(self, argv: Sequence[str], timeout: float = 300) -> RunResult:
        """Run any command inside the chroot (as root, ``HOME=/root``) with the base mounts."""
        env = {"HOME": "/root", "LANG": "C.UTF-8", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "DEBIAN_FRONTEND": "noninteractive"}
        return self._in_namespace(self._base_mounts(), argv, env, timeout)

    def run_batch(self, batch: Path, io_dir: Path, args: Sequence[str] = (), *,
                  plugin_dirs: Sequence[Path] = (), timeout: float = 300, display: str | None = None,
                  fresh_config: bool = False, environment: Mapping[str, str] | None = None) -> RunResult:
        """Run the Python file ``batch`` in GIMP's ``python-fu-eval`` inside the chroot.

        Args:
            batch: the batch file; its folder is mounted read-only at :data:`BATCH_MOUNT` and put first on
                ``sys.path``.
            io_dir: host folder mounted read-write at :data:`IO_MOUNT` (inputs and outputs).
            args: the batch's ``sys.argv[1:]``.
            plugin_dirs: host folders that each hold plug-in subfolders (``name/name.py``); mounted
                read-only at ``/mnt/plug-ins/N`` and put first in GIMP's ``plug-in-path``.
            timeout: seconds before GIMP and its plug-ins are killed (the result then has status 124).
            display: an X display (``":99"``; its socket must be in the host's ``/tmp/.X11-unix``) to run the
                GUI binary (``gimp-3.0``) instead of the console one (``gimp-console-3.0``); see :meth:`gimp_binary`.
            fresh_config: start from an empty configuration folder (a cold start, ~8 s).
            environment: more variables for GIMP's environment, which its plug-ins inherit (e.g. the plug-in's GUI
                test hook, ``plugin_gimp.dialog.UI_TEST_HOOK``).

        Returns:
            The run's exit status (0 = the batch finished, 64 = it raised), output and wall time.

        Raises:
            GimpUnavailable: the chroot is not built (call :meth:`ensure_built`) or prerequisites are missing.
            LookupError: the chroot has no GIMP binary for its GIMP version (:meth:`gimp_binary`).
        """
        _require_root_tools()
        if not self.is_complete():
            raise GimpUnavailable(f"the GIMP chroot {self.root} is not built")
        batch = batch.resolve()
        mounts = (self._base_mounts() + self._bind(io_dir, IO_MOUNT, read_only=False)
                  + self._bind(batch.parent, BATCH_MOUNT, read_only=True))
        # The GUI shows its welcome dialog when the gimprc has no config-version (the first start of a
        # version) or show-welcome-dialog is on (gimp_update_auto_check in app/gimp-update.c); it would
        # take the keyboard focus from the image window.
        gimprc = [f'(config-version "{self.gimp_version()}")', "(show-welcome-dialog no)"] if display else []
        if plugin_dirs:
            targets = [f"{PLUGIN_MOUNT}/{n}" for n in range(len(plugin_dirs))]
            for source, target in zip(plugin_dirs, targets, strict=True):
                mounts += self._bind(source, target, read_only=True)
            gimprc.append('(plug-in-path "{}:${{gimp_dir}}/plug-ins:${{gimp_plug_in_dir}}/plug-ins")'
                          .format(":".join(targets)))
        key = hashlib.sha256("\n".join([*gimprc, "gui" if display else "console"]).encode()).hexdigest()[:12]
        config = f"{CONFIG_BASE}/{'fresh-' + str(os.getpid()) if fresh_config else key}"
        host_config = Path(f"{self.root}{config}")
        if fresh_config:
            shutil.rmtree(host_config, ignore_errors=True)
        host_config.mkdir(parents=True, exist_ok=True)
        gimp_args = ["-i"] if not display else ["-s"]
        if gimprc:
            self._write_gimprc(Path(f"{host_config}.gimprc"), gimprc)
            gimp_args += ["-g", f"{config}.gimprc"]
        env = {"HOME": "/root", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin", "GIMP3_DIRECTORY": config,
               BATCH_ARGS_ENV: json.dumps(list(args)), **(environment or {})}
        if display:
            mounts += self._bind(Path("/tmp/.X11-unix"), "/tmp/.X11-unix", read_only=True)
            env["DISPLAY"] = display
        path = f"{BATCH_MOUNT}/{batch.name}"
        code = (f"import json, os, sys; sys.argv = [{path!r}] + json.loads(os.environ[{BATCH_ARGS_ENV!r}]); "
                f"sys.path.insert(0, {BATCH_MOUNT!r}); sys.dont_write_bytecode = True; "
                f"exec(compile(open({path!r}).read(), {path!r}, 'exec'), {{'__name__': '__main__'}})")
        argv = [self.gimp_binary(gui=display is not None), *gimp_args, "--batch-interpreter=python-fu-eval",
                "-b", code, "--quit"]
        with _locked(Path(f"{host_config}.lock")):
            try:
                return self._in_namespace(mounts, argv, env, timeout)
            finally:
                if fresh_config:
                    shutil.rmtree(host_config, ignore_errors=True)
                    Path(f"{host_config}.gimprc").unlink(missing_ok=True)

    @staticmethod
    def _write_gimprc(path: Path, lines: Sequence[str]) -> None:
        """Write the alternate gimprc only when one of ``lines`` is missing from it (GIMP adds its own lines
        on exit; replacing them every time makes every start a cold one)."""
        present = set(_read_lines(path))
        if not all(line in present for line in lines):
            path.write_text("".join(line + "\n" for line in lines))


def ensure_host_tools(tools: dict[str, str]) -> None:
    """Install the Debian packages for the commands in ``tools`` (``{command: package}``) that are missing.

    Raises:
        GimpUnavailable: not root, or apt-get failed.
    """
    missing = sorted({package for command, package in tools.items() if shutil.which(command) is None})
    if missing:
        if os.geteuid() != 0:
            raise GimpUnavailable(f"missing host packages {missing} and not root to install them")
        GimpChroot._host_apt_install("--no-install-recommends", *missing)


@contextlib.contextmanager
def xvfb(width: int = 1280, height: int = 800, timeout: float = 30) -> Iterator[str]:
    """Run a virtual X server (``Xvfb``, host package ``xvfb``) on a free display; yields its name (``":N"``).

    Its socket is in the host's ``/tmp/.X11-unix``, which :meth:`GimpChroot.run_batch` mounts for ``display``.

    Raises:
        GimpUnavailable: Xvfb is not installed or did not report a display within ``timeout`` seconds.
    """
    if shutil.which("Xvfb") is None:
        raise GimpUnavailable("the host has no Xvfb (apt-get install xvfb)")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", f"{width}x{height}x24",
                               "-nolisten", "tcp"], pass_fds=(write_end,), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as reported:     # Xvfb writes the display number once it accepts clients
            number = read_line_within(reported, timeout)
        if not number.strip().isdigit():
            raise GimpUnavailable(f"Xvfb did not start (exit status {server.poll()})")
        yield f":{number.strip()}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def read_line_within(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or "" when nothing arrived within ``timeout`` seconds (then blocks for the rest of
    the line, which a line-buffered writer sends at once)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        return stream.readline() if selector.select(timeout) else ""


def press_keys(display: str, window_name: str, keys: Sequence[str], timeout: float = 30) -> None:
    """Focus the first visible window whose title matches ``window_name`` and press ``keys`` (xdotool names,
    e.g. ``"ctrl+z"``), each once. No window manager is needed (``windowfocus``, not ``windowactivate``).

    The window is looked up every 0.2 s until ``timeout`` seconds have passed, not with ``search --sync``: while
    GIMP opens and closes its other windows (progress, splash), xdotool's walk of the window tree can hit a window
    that has just gone (an X ``BadWindow`` error) and exit 1 at once; the next look-up is fine.

    Raises:
        subprocess.CalledProcessError: xdotool failed to focus the window or to press a key.
        TimeoutError: no such window within ``timeout`` seconds (with xdotool's last error output).
    """
    env = {**os.environ, "DISPLAY": display}
    deadline = time.monotonic() + timeout
    while True:
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", window_name], env=env,
                               capture_output=True, text=True, timeout=timeout)
        windows = found.stdout.split()
        if windows:
            focused = subprocess.run(["xdotool", "windowfocus", "--sync", windows[0]], env=env, capture_output=True,
                                     text=True, timeout=timeout)
            if focused.returncode == 0:
                break
            found = focused
        if time.monotonic() > deadline:
            raise TimeoutError(f"no visible window {window_name!r} to focus on {display} within {timeout} s "
                               f"(xdotool exit status {found.returncode}: {found.stderr.strip()!r})")
        time.sleep(0.2)
    for key in keys:
        subprocess.run(["xdotool", "key", "--clearmodifiers", key], env=env, check=True, timeout=timeout)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``build``, ``run BATCH [ARG...]`` or ``exec CMD [ARG...]`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", default=DEFAULT_RELEASE,
                        help=f"Debian release of the chroot (default {DEFAULT_RELEASE}; tested: {', '.join(RELEASES)})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the chroot if it is missing or incomplete")
    run = sub.add_parser("run", help="run a batch file in gimp-console")
    run.add_argument("batch", type=Path)
    run.add_argument("--io", type=Path, help="host folder at /mnt/io (default: the current folder)")
    run.add_argument("--plugin-dir", type=Path, action="append", default=[])
    run.add_argument("--timeout", type=float, default=300)
    run.add_argument("--display", help="X display for the GUI binary, e.g. :99")
    run.add_argument("--fresh-config", action="store_true")
    run.add_argument("args", nargs=argparse.REMAINDER)
    ex = sub.add_parser("exec", help="run a command inside the chroot")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    chroot = GimpChroot(ns.release)
    spent = chroot.ensure_built()
    if ns.command == "build":
        print(f"{chroot.root}: GIMP {chroot.gimp_version()}, complete ({spent:.1f} s spent building)")
        return 0
    if ns.command == "exec":
        result = chroot.run_command(ns.argv)
    else:
        result = chroot.run_batch(ns.batch, ns.io or Path.cwd(), ns.args, plugin_dirs=ns.plugin_dir,
                                  timeout=ns.timeout, display=ns.display, fresh_config=ns.fresh_config)
        print(f"[gimp_harness] exit status {result.returncode} in {result.seconds:.2f} s", file=sys.stderr)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
