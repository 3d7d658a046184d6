"""Threads and the OpenMP wait policy: how a run shares the CPU cores with other jobs.

torch runs its CPU kernels on an OpenMP thread team (GNU libgomp in the Linux wheels). Two
settings decide how a run behaves on a machine that other processes share:

- **threads** (``--threads N``, ``torch.set_num_threads``): the size of the team. torch's
  default is one thread per physical core. It can be changed at any time after ``import torch``.
- **the wait policy** (``OMP_WAIT_POLICY``): what a thread that finished its part of a parallel
  region does while it waits. libgomp's default spins for about 300,000 iterations (a few
  milliseconds) before it sleeps; ``PASSIVE`` sleeps at once. On a shared machine the spinning
  thread burns the core that the thread it waits for (or the other job) needs: measured on a
  2-core machine next to one CPU-bound torch process, an MLP trained at 1,800 samples/s with
  torch's defaults and at 19,000-43,000 with ``PASSIVE`` (idle: 83,000; issue 18). libgomp
  reads the variable once, when it is loaded by ``import torch``; setting it later has no effect
  (``tests/test_threads.py`` measures both). ``PASSIVE`` is not free on an idle machine: a small
  MLP's threads then fall asleep between the many short parallel regions of each step and lose
  about half the speed. So the command line decides at its entry (:func:`prepare_environment`,
  called by :func:`lifelong_kd.__main__.main`, before anything imports torch): when other
  processes keep a core busy at that moment, ``PASSIVE``; on an idle machine, libgomp's default.
  A library user sets the variable in the environment or calls :func:`prepare_environment`
  before the first ``import torch``.

A variable the user set (``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS``) always wins over these
defaults. This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, MutableMapping

# The wait policy of lifelong-kd processes when another process keeps a core busy: idle OpenMP
# threads sleep instead of spinning, so a run does not fight the jobs it shares a machine with.
# On an idle machine the policy stays unset (libgomp's spin-then-sleep): PASSIVE there costs a small
# MLP half its speed, since its threads sleep between the many short parallel regions of a step.
# Measured with benchmarks/shared_machine.py (docs/results.md, "Threads on a shared machine").
DEFAULT_WAIT_POLICY = "PASSIVE"
# Cores other processes must keep busy at start for the passive policy: half a core.
BUSY_THRESHOLD = 0.5
# How long the start-up probe watches the machine (seconds).
PROBE_SECONDS = 0.1
# What results.json records when no wait policy was set: libgomp's default (spin, then sleep).
UNSET = "unset (OpenMP default: spin, then sleep)"


class ThreadsError(ValueError):
    """A thread count or wait policy that cannot be used (the message names the fix)."""


def available_cores() -> int:
    """Cores this process may use (its CPU affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> int | None:
    """``threads`` if it is None or a positive integer.

    Raises:
        ThreadsError: Not a positive integer.
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ThreadsError(
            f"--threads must be a positive integer (torch's CPU threads; this machine lets the process use "
            f"{available_cores()} cores), got {threads!r}; give e.g. --threads 1, or leave it out for torch's default."
        )
    return threads


def busy_cores(seconds: float = PROBE_SECONDS) -> float | None:
    """Cores kept busy by the machine's processes over the next ``seconds`` (None where unknown).

    Read from the kernel's CPU counters (``/proc/stat``) before and after a sleep, so this
    process, asleep meanwhile, is not counted. Linux only.
    """
    try:
        before = _cpu_counters()
        time.sleep(seconds)
        after = _cpu_counters()
    except (OSError, ValueError, IndexError):
        return None
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle and iowait
    cpus = os.cpu_count() or 1
    return cpus * (total - idle) / total if total > 0 else None


def _cpu_counters() -> list[int]:
    """The first eight counters (user .. steal) of the ``cpu`` line of ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()
    if fields[0] != "cpu":
        raise ValueError("unexpected /proc/stat")
    return [int(value) for value in fields[1:9]]


def prepare_environment(environment: MutableMapping[str, str] | None = None, busy: float | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY`` to :data:`DEFAULT_WAIT_POLICY` when other processes keep the cores busy.

    A policy already in the environment is kept. Otherwise the machine is watched for
    :data:`PROBE_SECONDS` (:func:`busy_cores`); when other processes keep at least
    :data:`BUSY_THRESHOLD` of a core busy, the passive policy is set, and on an idle machine the
    variable is left unset (libgomp's default is fastest there). The decision is taken once, at
    start: a job that starts competing later does not change it (sweeps set the passive policy
    for their workers, :func:`worker_environment`).

    Call it before the first ``import torch`` of the process: libgomp reads the variable when
    torch loads it. Child processes (sweep workers, torchrun) inherit the variable.

    Args:
        environment: The environment to change (default ``os.environ``).
        busy: Busy cores to decide on, instead of measuring them.

    Returns:
        Whether the policy can take effect in this process: False when torch is imported already.
    """
    environment = os.environ if environment is None else environment
    if "OMP_WAIT_POLICY" not in environment:
        busy = busy_cores() if busy is None else busy
        if busy is not None and busy >= BUSY_THRESHOLD:
            environment["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
    return "torch" not in sys.modules


def worker_environment(threads: int, base: Mapping[str, str] | None = None, shared: bool = True) -> dict[str, str]:
    """The environment of a worker process that gets ``threads`` threads (OpenMP and MKL) and the wait policy.

    Args:
        threads: The worker's share of the cores.
        base: The environment to start from (default ``os.environ``); a wait policy it sets wins.
        shared: Other workers run beside this one: the passive policy is set without measuring.

    Returns:
        A new environment (``base`` is not changed).
    """
    environment = {**(os.environ if base is None else base), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    prepare_environment(environment, busy=BUSY_THRESHOLD if shared else None)
    return environment


def share_of_cores(jobs: int) -> int:
    """Threads of each of ``jobs`` processes running at once: an equal share of the cores, at least 1."""
    return max(1, available_cores() // max(1, jobs))


def apply_threads(threads: int | None) -> None:
    """Use ``threads`` torch CPU threads in this process (None: leave torch's choice).

    Raises:
        ThreadsError: ``threads`` is not a positive integer.
    """
    import torch

    if check_threads(threads) is not None:
        torch.set_num_threads(threads)


def describe() -> dict[str, object]:
    """The thread settings of this process, for ``results.json`` (``setup.threads``).

    ``threads`` is torch's intra-op thread count; ``wait_policy`` the ``OMP_WAIT_POLICY`` of
    the environment (what libgomp read at ``import torch`` when the variable was set before it,
    as the command line does).
    """
    import torch

    return {
        "threads": torch.get_num_threads(),
        "wait_policy": os.environ.get("OMP_WAIT_POLICY") or UNSET,
        "cores": available_cores(),
    }
