"""Stage-in and stage-out throughput of batchnb against raw adlfs, on one fresh Azurite.

Cases (one line each: ``case: batchnb X MB/s, adlfs Y MB/s, ratio R``):

- stage-in small / large: ``stage_in`` of N files as N inputs with an empty
  node cache, as the runner calls it for the first task on a node (one
  ``info`` for the etag, then the download, then a hard link), vs
  ``fs.get(rpaths, lpaths)``;
- stage-in small, no cache: ``stage_in`` with ``cache_dir=None`` vs ``fs.get``;
- stage-in small, prefix: one input naming the folder (``az://.../small/``),
  empty cache: the listing gives every etag, so no ``info`` per file;
- stage-in small / large, warm cache: the same inputs again once an earlier
  task filled the node cache (an ``info`` each, a hard link, no download)
  vs ``fs.get``;
- stage-out small / large: ``stage_out`` of a ``*.bin`` glob to a folder
  vs ``fs.put(lpaths, rpaths)``.

Each figure is the best of ``--repeat`` runs, batchnb's and adlfs's taken in
turns. Azurite and the benchmark share the machine's cores, so the ratio says
more than the absolute figures.

Usage: ``python bench/staging.py [--small N] [--large N] [--repeat N]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _azurite import SETUP_COMMAND, Azurite, AzuriteNotInstalled

from batchnb import staging
from batchnb.spec import OutputFile, ResourceFile

SMALL, LARGE = 64 * 1024, 16 * 1024 * 1024


def compare(case: str, nbytes: int, repeat: int, ours, base) -> None:
    """Print the best of ``repeat`` runs of ``ours(i)`` and ``base(i)``, taken in turns
    so that a slow spell of Azurite's falls on both."""
    best = {ours: float("inf"), base: float("inf")}
    for i in range(repeat):
        for run in (base, ours):
            t0 = time.perf_counter()
            run(i)
            best[run] = min(best[run], time.perf_counter() - t0)
    a, b = nbytes / 1e6 / best[ours], nbytes / 1e6 / best[base]
    print(f"{case}: batchnb {a:,.1f} MB/s, adlfs {b:,.1f} MB/s, ratio {a / b:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=200, help="files of 64 KiB")
    ap.add_argument("--large", type=int, default=5, help="files of 16 MiB")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    try:
        azurite = Azurite()
    except AzuriteNotInstalled:
        sys.exit(f"azurite-blob is not installed; run: {SETUP_COMMAND}")
    scratch = Path(tempfile.mkdtemp(prefix="batchnb-bench-staging-"))
    serial = itertools.count()
    with azurite:
        fs, opts = azurite.fs(), azurite.storage_options
        fs.mkdir("bench")
        print(f"# {os.cpu_count()} cores; Azurite on 127.0.0.1:{azurite.port}; "
              f"staging.CONCURRENCY={staging.CONCURRENCY}", flush=True)
        for name, count, size in (("small", args.small, SMALL), ("large", args.large, LARGE)):
            src = scratch / f"src-{name}"
            src.mkdir()
            for i in range(count):
                (src / f"f{i:04d}.bin").write_bytes(os.urandom(size))
            names = sorted(p.name for p in src.iterdir())
            fs.put([str(src / n) for n in names], [f"bench/{name}/{n}" for n in names])
            inputs = tuple(ResourceFile(n, f"az://bench/{name}/{n}") for n in names)
            total = count * size

            def fresh(label: str, i: int) -> Path:
                """A new empty folder for every run, so no run writes over files of an earlier one."""
                folder = scratch / f"{label}-{name}-{i}-{next(serial)}"
                folder.mkdir()
                return folder

            def get(i):
                fs.get([f"bench/{name}/{n}" for n in names], [str(fresh("get", i) / n) for n in names])

            compare(f"stage-in {name}", total, args.repeat,
                    lambda i: staging.stage_in(inputs, fresh("in", i), storage_options=opts,
                                               cache_dir=fresh("cache", i)), get)
            if name == "small":
                compare(f"stage-in {name}, no cache", total, args.repeat,
                        lambda i: staging.stage_in(inputs, fresh("nocache", i), storage_options=opts), get)
                prefix = (ResourceFile("d", f"az://bench/{name}/"),)
                compare(f"stage-in {name}, prefix", total, args.repeat,
                        lambda i: staging.stage_in(prefix, fresh("prefix", i), storage_options=opts,
                                                   cache_dir=fresh("pcache", i)), get)
            warm = fresh("cache", 99)
            staging.stage_in(inputs, fresh("warm", 99), storage_options=opts, cache_dir=warm)
            compare(f"stage-in {name}, warm cache", total, args.repeat,
                    lambda i: staging.stage_in(inputs, fresh("warm", i), storage_options=opts, cache_dir=warm), get)

            outputs = (OutputFile("*.bin", f"az://bench/out-{name}/{{attempt}}/"),)
            compare(f"stage-out {name}", total, args.repeat,
                    lambda i: staging.stage_out(outputs, src, job_id="bench", task_id="t", attempt=i,
                                                outcome="success", storage_options=opts, task_dir=scratch),
                    lambda i: fs.put([str(src / n) for n in names], [f"bench/put-{name}/{i}/{n}" for n in names]))
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(azurite.location, ignore_errors=True)


if __name__ == "__main__":
    main()
