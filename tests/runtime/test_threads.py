"""BLAS threads per run: the setting, where it applies, its fallback without threadpoolctl."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import dlcc
from dlcc.cli import main
from dlcc.errors import ExecutionError
from dlcc.runtime import threads
from dlcc.runtime.interpreter import Interpreter, NumpyEngine
from dlcc.runtime.threads import blas_threads, physical_cores

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_counts() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_physical_cores_is_at_least_one_and_at_most_the_cpus():
    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))


def test_a_block_sets_the_count_and_restores_it():
    assert threads.backend() == "threadpoolctl"  # installed with dlcc (pyproject)
    before = blas_counts()
    with blas_threads(1) as n:
        assert n == 1 and set(blas_counts()) == {1}
        with blas_threads(3) as inner:  # the outermost setting holds
            assert inner == 1 and set(blas_counts()) == {1}
    assert blas_counts() == before
    with blas_threads() as n:
        assert n == physical_cores() and set(blas_counts()) == {n}
    assert blas_counts() == before


class Probe:
    """A target that records the BLAS thread count while it runs."""

    def run(self, bundle, inputs):
        self.seen = blas_counts()
        return {}


def test_a_run_applies_the_bundle_or_run_setting(sample_bundles):
    x = np.zeros((1, 1, 28, 28), np.float32)
    probe = Probe()
    bundle = dlcc.load(sample_bundles["lenet5"], threads=1)
    bundle.run(x, target=probe)
    assert set(probe.seen) == {1}
    bundle.run(x, target=probe, threads=2)
    assert set(probe.seen) == {2}
    with blas_threads(1):  # an enclosing setting wins over the bundle's
        dlcc.load(sample_bundles["lenet5"], threads=2).run(x, target=probe)
    assert set(probe.seen) == {1}


class Recorder:
    """A MatrixEngine wrapper that records the BLAS thread count at each product."""

    def __init__(self) -> None:
        self.engine, self.seen = NumpyEngine(), []

    def matmul(self, x, w, tensor):
        y = self.engine.matmul(x, w, tensor)
        self.seen.append(blas_counts())
        return y

    def convolve(self, x, w, attrs, tensor):
        y = self.engine.convolve(x, w, attrs, tensor)
        self.seen.append(blas_counts())
        return y


def test_small_products_run_on_one_thread_large_ones_on_the_count(monkeypatch, sample_bundles):
    """The count is a ceiling: below PARALLEL_WORK multiply-adds a product runs on one
    thread; the switch holds until a product needs the other, and the block restores all."""
    before = blas_counts()
    bundle = dlcc.load(sample_bundles["lenet5"])
    x = np.zeros((2, 1, 28, 28), np.float32)
    recorder = Recorder()
    with blas_threads(2):
        Interpreter(recorder).run(bundle, x)
        assert recorder.seen and all(set(c) == {1} for c in recorder.seen)  # all small
        monkeypatch.setattr(threads, "PARALLEL_WORK", 0)
        recorder.seen.clear()
        Interpreter(recorder).run(bundle, x)
        assert recorder.seen and all(set(c) == {2} for c in recorder.seen)
        monkeypatch.undo()
        threads.product_threads(1)  # below the bound again: one thread
        assert set(blas_counts()) == {1}
    assert blas_counts() == before
    with blas_threads(1):  # a count of one is never raised
        threads.product_threads(1 << 40)
        assert set(blas_counts()) == {1}
    assert blas_counts() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_a_thread_count_is_a_positive_int(sample_bundles, bad):
    with pytest.raises(ExecutionError, match="threads"):
        dlcc.load(sample_bundles["lenet5"], threads=bad)
    with pytest.raises(ExecutionError, match="threads"):
        with blas_threads(bad):
            pass


def test_without_threadpoolctl_the_environment_carries_the_count(monkeypatch):
    monkeypatch.setattr(threads, "_blas_libraries", lambda: ())
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match="threadpoolctl"):
        with blas_threads(3):
            assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "7" and "OMP_NUM_THREADS" not in os.environ
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default count: nothing to say, nothing to set
        with blas_threads():
            assert os.environ["OPENBLAS_NUM_THREADS"] == "7"
    assert threads.backend() == "environment"


def test_cli_run_and_verify_take_threads(tmp_path, sample_bundles):
    data = os.path.join(os.path.dirname(__file__), "..", "..", "samples", "mnist_test_256.npz")
    runner = CliRunner()
    result = runner.invoke(main, ["run", sample_bundles["lenet5"], "-i", data, "--threads", "1"])
    assert result.exit_code == 0, result.output
    model = os.path.join(os.path.dirname(data), "lenet5.onnx")
    result = runner.invoke(
        main, ["verify", model, sample_bundles["lenet5"], "--data", data, "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["run", sample_bundles["lenet5"], "-i", data, "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output
