"""fmstore/threads.py: the thread count follows an explicit value, then FMSTORE_THREADS, then the
CPUs this process may use (affinity capped by the cgroup v2 quota)."""

from __future__ import annotations

import os

import numba
import pytest
import torch

from fmstore.errors import ConfigError
from fmstore.threads import apply_threads, available_cpus, cgroup_cpu_limit, decide_threads


@pytest.mark.parametrize(
    "text, limit",
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("200000 100000", 2.0), ("junk", None)],
)
def test_cgroup_quota_is_read_from_cpu_max(tmp_path, text, limit):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cgroup_cpu_limit(path) == limit


def test_no_cgroup_file_means_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_the_quota_caps_the_affinity_rounded_up(tmp_path):
    path = tmp_path / "cpu.max"
    mine = len(os.sched_getaffinity(0))
    path.write_text("max 100000")
    assert available_cpus(path) == mine
    path.write_text("50000 100000")  # half a CPU: still one thread
    assert available_cpus(path) == 1


def test_explicit_beats_the_environment_which_beats_the_machine():
    assert decide_threads(3, {"FMSTORE_THREADS": "5"}) == 3
    assert decide_threads(None, {"FMSTORE_THREADS": "5"}) == 5
    assert decide_threads(None, {}) == available_cpus()


@pytest.mark.parametrize("env, n", [({"FMSTORE_THREADS": "two"}, None), ({}, 0)])
def test_bad_counts_are_one_clear_error(env, n):
    with pytest.raises(ConfigError):
        decide_threads(n, env)


def test_apply_sets_numba_and_torch():
    before_numba, before_torch = numba.get_num_threads(), torch.get_num_threads()
    try:
        assert apply_threads(1) == 1
        assert numba.get_num_threads() == 1 and torch.get_num_threads() == 1
    finally:
        numba.set_num_threads(before_numba)
        torch.set_num_threads(before_torch)


def test_small_steps_run_on_one_thread_and_the_count_comes_back():
    import numba

    from fmstore.threads import PARALLEL_MIN_BATCH, serial_below

    before = numba.get_num_threads()
    with serial_below(1024):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with serial_below(PARALLEL_MIN_BATCH):
        assert numba.get_num_threads() == before
