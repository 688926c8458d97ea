"""The runtime keeps freed memory for the next run (runtime/memory.py): a run that repeats
the last one's allocations faults no new pages in."""

import resource

import pytest

import dlcc
from dlcc.runtime.memory import keep_freed_memory


def test_a_repeated_run_faults_in_no_pages(sample_bundles, sample_images):
    bundle = dlcc.load(sample_bundles["lenet5"], threads=1)
    images = sample_images[0][:64]  # (at this batch glibc's own thresholds fault ~1,900)
    bundle.run(images)
    if not keep_freed_memory():
        pytest.skip("malloc is not glibc's, or the environment sets its thresholds")
    bundle.run(images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    bundle.run(images)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 100, f"{faults} minor page faults (4 KB each) in a repeated run"
