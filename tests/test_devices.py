"""CPU thread count: affinity, cgroup quota (v2 and v1), --threads / TEXTSR_NUM_THREADS, chosen once."""

from __future__ import annotations

import os

import pytest
import torch

from napari_textsr import devices
from napari_textsr.cli import main
from napari_textsr.devices import THREADS_ENV, available_cpus, cgroup_cpu_limit, configure_threads, default_num_threads


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(devices, "_configured_threads", None)
    yield
    torch.set_num_threads(before)


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_available_cpus_is_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert available_cpus(tmp_path) == 6  # no quota files
    (tmp_path / "cpu.max").write_text("250000 100000")
    assert available_cpus(tmp_path) == 2  # 2.5 cores -> 2 threads
    (tmp_path / "cpu.max").write_text("50000 100000")
    assert available_cpus(tmp_path) == 1  # never 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    (tmp_path / "cpu.max").write_text("max 100000")
    assert available_cpus(tmp_path) == 1


def test_precedence_argument_then_environment_then_cpus(monkeypatch):
    monkeypatch.setattr(devices, "available_cpus", lambda: 6)
    assert default_num_threads() == 6
    assert default_num_threads(ranks=4) == 1 and default_num_threads(ranks=2) == 3
    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_num_threads() == 3
    assert default_num_threads(5) == 5
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match="TEXTSR_NUM_THREADS must be a whole number"):
        default_num_threads()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="at least 1"):
            default_num_threads(bad)


def test_configure_threads_decides_once(monkeypatch):
    monkeypatch.setattr(devices, "available_cpus", lambda: 1)
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(devices, "available_cpus", lambda: 2)
    assert configure_threads() == 1  # already chosen
    assert configure_threads(2) == 2 and torch.get_num_threads() == 2  # explicit always applies


def test_cli_threads_option_and_environment(monkeypatch, capsys):
    assert main(["info", "random:pdn:2:tiny", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    monkeypatch.setattr(devices, "_configured_threads", None)
    monkeypatch.setenv(THREADS_ENV, "2")
    assert main(["info", "random:pdn:2:tiny"]) == 0
    assert torch.get_num_threads() == 2
    capsys.readouterr()
    monkeypatch.setattr(devices, "_configured_threads", None)
    monkeypatch.setenv(THREADS_ENV, "x")
    assert main(["info", "random:pdn:2:tiny"]) == 1
    assert "TEXTSR_NUM_THREADS must be a whole number" in capsys.readouterr().err
