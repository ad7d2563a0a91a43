"""Podman for the container tests: its settings for this kind of host, and an image built offline.

``podman_image`` (session) writes a containers.conf that makes podman work
here (see ../shared/FIELD-NOTES.md, "Containers": runc, cgroupfs, file events,
nofile ulimits within the sandbox's hard limit), points ``CONTAINERS_CONF`` at
it - a setting of the test environment, which the pools' worker processes
inherit, not batchnb's business - and imports a 1 MB busybox image
(``localhost/bnb-busybox:1``): no registry is reachable. podman,
busybox-static and runc come from the project's setup (``make setup-test``);
a test that needs them fails, naming that, and never skips.

``docker_host`` (module) serves podman's Docker-compatible API on a socket
(``podman system service``, stopped by pid after) and points ``DOCKER_HOST``
at it, so that the docker CLI runs containers here without a docker daemon.

The image is left in podman's store after the session (importing it again is
idempotent and costs 0.2 s); every container a test starts is named ``bnb-...``
and removed by batchnb itself, which is what the tests check.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

IMAGE = "localhost/bnb-busybox:1"
SETUP_COMMAND = "make setup-test (apt-get install -y podman busybox-static runc)"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# The busybox applets the tests' command lines use.
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "env", "pwd", "mkdir", "printf", "test", "true", "false")


def _need(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; run {SETUP_COMMAND}")
    return path


def running_containers(prefix: str = "bnb-") -> list[str]:
    """Names of the containers podman runs now (``podman ps``) that start with ``prefix``."""
    out = subprocess.run(["podman", "ps", "--format", "{{.Names}}"], capture_output=True, text=True,
                         check=True, timeout=30)
    return [n for n in out.stdout.split() if n.startswith(prefix)]


def all_containers(prefix: str = "bnb-") -> list[str]:
    """Names of every container podman holds, running or not (``podman ps -a``)."""
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                         check=True, timeout=30)
    return [n for n in out.stdout.split() if n.startswith(prefix)]


@pytest.fixture(scope="session")
def podman_image():
    """The name of a busybox image in podman's store, with podman set up for this host."""
    _need("podman")
    _need("runc")
    busybox = Path(_need("busybox")).resolve()
    folder = Path(tempfile.mkdtemp(prefix="bnb-podman-"))
    conf = folder / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    old = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(conf)
    try:
        if subprocess.run(["podman", "image", "exists", IMAGE], timeout=60, check=False).returncode != 0:
            rootfs = folder / "rootfs"
            (rootfs / "bin").mkdir(parents=True)
            (rootfs / "tmp").mkdir()
            shutil.copy2(busybox, rootfs / "bin" / "busybox")
            for applet in APPLETS:
                (rootfs / "bin" / applet).symlink_to("busybox")
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(["podman", "import", "-", IMAGE], stdin=tar.stdout, check=True, capture_output=True,
                           timeout=120)
            tar.stdout.close()
            tar.wait(timeout=60)
        yield IMAGE
    finally:
        if old is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = old
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_host(podman_image):
    """``DOCKER_HOST`` set to a podman API socket, for ``container_runtime="docker"``; the docker CLI
    (Debian's docker-cli) must be on PATH."""
    _need("docker")
    folder = Path(tempfile.mkdtemp(prefix="bnb-docker-"))
    sock = folder / "podman.sock"
    log = open(folder / "service.log", "wb")
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{sock}"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["docker", "version"], capture_output=True, timeout=30, check=False).returncode != 0:
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError(f"podman system service did not answer on {sock}: "
                                   f"{(folder / 'service.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(timeout=30)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
