"""passes/comparison.py: the streamed sums against the same figures on whole arrays."""

import numpy as np

from dlcc.passes.comparison import Comparison


def test_batches_streamed_give_the_whole_arrays_figures():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((50, 10))
    got = ref + rng.standard_normal((50, 10)) * np.linspace(0.01, 0.3, 50)[:, None]
    streamed = Comparison()
    for part in np.array_split(np.arange(50), 4):
        streamed.add(ref[part], got[part].astype(np.float32))
    noise = ((ref - got.astype(np.float32)) ** 2).sum(1)
    signal = (ref**2).sum()
    assert np.isclose(streamed.sqnr_db, 10 * np.log10(signal / noise.sum()))
    assert np.isclose(streamed.nsr_error, np.sqrt(50) * noise.std() / signal)
    cosine = (ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)
    assert np.isclose(streamed.cosine, cosine, atol=1e-7)
    assert streamed.agreement == (ref.argmax(1) == got.argmax(1)).mean()
    assert np.isclose(streamed.max_abs, np.abs(ref - got.astype(np.float32)).max())


def test_edges_identical_zero_and_noise_on_silence():
    same = Comparison.of(np.ones((3, 2)), np.ones((3, 2)))
    assert (same.sqnr_db, same.cosine, same.nsr, same.nsr_error) == (np.inf, 1.0, 0.0, 0.0)
    silent = Comparison.of(np.zeros((2, 3)), np.ones((2, 3)))
    assert (silent.nsr, silent.sqnr_db, silent.cosine) == (np.inf, -np.inf, 0.0)
    assert Comparison.of(np.zeros(4), np.zeros(4)).metrics()["cosine"] == 1.0
