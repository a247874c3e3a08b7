"""The BIM factorizer (host.compress.bim) and its CLI: sparsity met, round trips, padding, kept magnitude."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.compress import bim
from host.compress.__main__ import main
from host.compress.bim import SPARSITY_TOLERANCE, factorize, kept_magnitude, magnitude_mask
from hw.spec.bim import BimMask, tile_grid, tiles_to_mask


def _weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Gaussian with row and column scales: some structure for the factorizer to find, like trained layers."""
    return (rng.standard_normal((rows, cols)) * rng.random((rows, 1)) * rng.random((1, cols))).astype(np.float32)


# --- sparsity, round trip, padding -----------------------------------------------------------------------

# The factorizer lands within max(m_t, n_t) / 2 kept weights of the target (each step of its threshold search
# and each flip moves the count by at most one tile row or column), so +-0.5 % is always reachable once the
# matrix holds n >= 100 * (max(m_t, n_t) + 3) weights (the + 3 covers the rounding of the target count).


@st.composite
def _problems(draw):
    m_t, n_t = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    rows = draw(st.integers(1, 90))
    min_cols = -(-100 * (max(m_t, n_t) + 3) // rows)
    cols = draw(st.integers(min_cols, min_cols + 60))
    return rows, cols, m_t, n_t, draw(st.integers(1, 6)), draw(st.floats(0.0, 0.98)), draw(st.integers(0, 2**16))


@given(_problems())
@settings(max_examples=40, deadline=None)
def test_requested_sparsity_is_met_and_the_file_round_trips(tmp_path_factory, problem):
    rows, cols, m_t, n_t, r, sparsity, seed = problem
    w = _weights(np.random.default_rng(seed), rows, cols)
    assert w.size >= 100 * (max(m_t, n_t) + 3)
    factored = factorize(w, sparsity, m_t, n_t, r, seed=seed)
    mask = factored.mask()
    assert mask.shape == (rows, cols) and mask.dtype == bool
    assert abs((1 - mask.mean()) - sparsity) <= SPARSITY_TOLERANCE
    assert factored.p.shape == (*tile_grid((rows, cols), m_t, n_t), m_t, r)
    assert factored.index_bits() == r * (m_t + n_t) * np.prod(tile_grid((rows, cols), m_t, n_t))
    path = tmp_path_factory.mktemp("bim") / "w.bim.npz"
    factored.save(path)
    assert np.array_equal(BimMask.load(path).mask(), mask)


@given(st.integers(0, 2**16), st.sampled_from([(37, 53, 8, 16, 3), (70, 45, 32, 32, 2), (5, 301, 8, 64, 4)]),
       st.sampled_from([0.5, 0.8, 0.9, 0.95]))
@settings(max_examples=20, deadline=None)
def test_refinement_never_keeps_less_than_the_plain_binarization(seed, config, sparsity):
    rows, cols, m_t, n_t, r = config
    w = _weights(np.random.default_rng(seed), rows, cols)
    plain = factorize(w, sparsity, m_t, n_t, r, seed=seed, rounds=0).mask()
    refined = factorize(w, sparsity, m_t, n_t, r, seed=seed).mask()
    assert abs((1 - refined.mean()) - sparsity) <= SPARSITY_TOLERANCE
    assert kept_magnitude(w, refined) >= kept_magnitude(w, plain)


def test_refinement_helps_and_stays_below_magnitude_pruning():
    w = _weights(np.random.default_rng(3), 256, 384)
    info: dict = {}
    refined = kept_magnitude(w, factorize(w, 0.9, 64, 64, 4, info=info).mask())
    plain = kept_magnitude(w, factorize(w, 0.9, 64, 64, 4, rounds=0).mask())
    bound = kept_magnitude(w, magnitude_mask(w, 0.9))
    assert plain + 0.01 < refined < bound
    assert 1 <= len(info["rounds"]) <= bim.REFINE_ROUNDS
    # A random mask keeps about 1 - s = 0.1 of the magnitude; the NMF alone must already do far better.
    assert plain > 0.25
    assert kept_magnitude(w, factorize(w, 0.9, 64, 64, 4, nmf_iters=0, rounds=0).mask()) < 0.15


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("r", [2, 3])
def test_planted_boolean_structure_is_recovered(seed, r):
    # Large magnitudes exactly on a rank-2 Boolean product per tile, small ones elsewhere: at that sparsity
    # magnitude pruning keeps exactly the planted mask, and so should the factorizer.
    rng = np.random.default_rng(seed)
    rows, cols, m_t, n_t = 100, 150, 32, 32
    t_r, t_c = tile_grid((rows, cols), m_t, n_t)
    planted = tiles_to_mask(rng.random((t_r, t_c, m_t, 2)) < 0.4, rng.random((t_r, t_c, 2, n_t)) < 0.4, (rows, cols))
    w = np.where(planted, 1 + rng.random((rows, cols)), 0.05 * rng.random((rows, cols)))
    w *= rng.choice([-1, 1], (rows, cols))
    sparsity = 1 - planted.mean()
    mask = factorize(w, sparsity, m_t, n_t, r, seed=seed).mask()
    assert kept_magnitude(w, mask) >= 0.99 * kept_magnitude(w, magnitude_mask(w, sparsity))
    assert (mask != planted).mean() < 0.01


@pytest.mark.parametrize("shape, tile, rank", [((3, 5), (8, 8), 2), ((1, 1), (1, 1), 1), ((10, 12), (4, 4), 9)])
def test_small_shapes_tiles_larger_than_the_matrix_and_large_ranks(shape, tile, rank):
    w = _weights(np.random.default_rng(0), *shape)
    factored = factorize(w, 0.5, *tile, rank)
    assert factored.mask().shape == shape
    target = bim.target_count(w.size, 0.5)
    assert abs(int(factored.mask().sum()) - target) <= max(tile) / 2 + 0.5


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.99])
def test_extremes_and_an_all_zero_matrix(sparsity):
    for w in (np.zeros((64, 96)), _weights(np.random.default_rng(1), 64, 96)):
        mask = factorize(w, sparsity, 16, 16, 2).mask()
        assert abs((1 - mask.mean()) - sparsity) <= SPARSITY_TOLERANCE
    assert factorize(np.ones((20, 30)), 0.0, 8, 8, 1).mask().all()


def test_deterministic_for_a_seed():
    w = _weights(np.random.default_rng(4), 60, 70)
    a, b = factorize(w, 0.8, 16, 16, 3, seed=7), factorize(w, 0.8, 16, 16, 3, seed=7)
    assert np.array_equal(a.p, b.p) and np.array_equal(a.z, b.z)


def test_magnitude_mask_and_kept_magnitude():
    w = np.array([[0.5, -3.0, 1.0], [2.0, -0.1, 0.0]])
    mask = magnitude_mask(w, 0.5)
    assert mask.tolist() == [[False, True, True], [True, False, False]]
    assert kept_magnitude(w, mask) == pytest.approx(6.0 / 6.6)
    assert kept_magnitude(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 1.0
    assert magnitude_mask(w, 0.0).all()
    with pytest.raises(ValueError, match="mask shape"):
        kept_magnitude(w, mask.T)


@pytest.mark.parametrize("args, message", [
    ((np.ones((4, 4)), 1.0, 2, 2, 1), "^sparsity must be in"),
    ((np.ones((4, 4)), -0.1, 2, 2, 1), "^sparsity must be in"),
    ((np.ones((4, 4)), "0.5", 2, 2, 1), "^sparsity must be a number"),
    ((np.ones((4, 4)), 0.5, 0, 2, 1), "^m_t must be"),
    ((np.ones((4, 4)), 0.5, 2, 2.5, 1), "^n_t must be"),
    ((np.ones((4, 4)), 0.5, 2, 2, 0), "^r must be"),
    ((np.ones(4), 0.5, 2, 2, 1), "^weights must be a non-empty 2-D"),
    ((np.zeros((0, 3)), 0.5, 2, 2, 1), "^weights must be a non-empty 2-D"),
    ((np.full((2, 2), np.nan), 0.5, 2, 2, 1), "NaN or infinite"),
    ((np.array([["a"]]), 0.5, 1, 1, 1), "^weights must be real"),
])
def test_bad_arguments_are_rejected(args, message):
    with pytest.raises(ValueError, match=message):
        factorize(*args)


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_factorizes_and_decodes(tmp_path: Path, capsys):
    w = _weights(np.random.default_rng(2), 100, 130)
    np.save(tmp_path / "w.npy", w)
    out, mask_out, decoded = tmp_path / "w.bim.npz", tmp_path / "mask.npy", tmp_path / "decoded.npy"
    assert main(["bim", "--weights", str(tmp_path / "w.npy"), "--sparsity", "0.9", "--tile", "32x48", "--rank", "3",
                 "--out", str(out), "--mask-out", str(mask_out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    mask = np.load(mask_out)
    assert mask.dtype == bool and mask.shape == w.shape
    assert np.array_equal(mask, BimMask.load(out).mask())
    assert summary["index_bits"] == 4 * 3 * 3 * (32 + 48)
    assert summary["sparsity"] == pytest.approx(1 - mask.mean(), abs=1e-6)
    assert summary["kept_magnitude"] == pytest.approx(kept_magnitude(w, mask), abs=1e-5)
    assert 0 < summary["kept_magnitude_vs_magnitude_pruning"] <= 1
    assert main(["bim-decode", str(out), "--out", str(decoded)]) == 0
    assert np.array_equal(np.load(decoded), mask)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    return status, capsys.readouterr().err.strip()


@pytest.mark.parametrize("options, message", [
    (["--tile", "64"], "--tile: expected MxN"),
    (["--tile", "0x8"], "--tile: expected MxN"),
    (["--tile", "8x-1"], "--tile: expected MxN"),
    (["--sparsity", "1.2"], "--sparsity: must be in [0, 1)"),
    (["--sparsity", "abc"], "--sparsity: must be in [0, 1)"),
    (["--rank", "0"], "--rank: must be >= 1"),
])
def test_cli_rejects_bad_options(tmp_path: Path, capsys, options, message):
    np.save(tmp_path / "w.npy", np.ones((8, 8), dtype=np.float32))
    base = {"--weights": str(tmp_path / "w.npy"), "--sparsity": "0.5", "--tile": "4x4", "--rank": "1",
            "--out": str(tmp_path / "o.npz")}
    base.update(dict(zip(options[::2], options[1::2])))
    status, err = _run(["bim", *[x for kv in base.items() for x in kv]], capsys)
    assert status == 2 and message in err and "\n" not in err


def test_cli_rejects_bad_inputs_and_files(tmp_path: Path, capsys):
    np.save(tmp_path / "v.npy", np.ones(8, dtype=np.float32))
    status, err = _run(["bim", "--weights", str(tmp_path / "v.npy"), "--sparsity", "0.5", "--tile", "4x4", "--rank",
                        "1", "--out", str(tmp_path / "o.npz")], capsys)
    assert status == 2 and "--weights: expected a non-empty 2-D matrix" in err
    status, err = _run(["bim-decode", str(tmp_path / "v.npy"), "--out", str(tmp_path / "m.npy")], capsys)
    assert status == 2 and "not an .npz archive" in err and "\n" not in err
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.savez(f, version=np.int64(1), shape=np.array([4, 4]), m_t=np.int64(4), n_t=np.int64(4), r=np.int64(1),
                 p=np.zeros(1, np.uint8), z=np.zeros(2, np.uint8))
    status, err = _run(["bim-decode", str(bad), "--out", str(tmp_path / "m.npy")], capsys)
    assert status == 2 and "field 'z'" in err and "\n" not in err
    assert not (tmp_path / "m.npy").exists()


def test_benchmark_mask_encodings_by_hand():
    from sim.bench.bim import mask_encodings

    mask = np.zeros((2, 60), dtype=bool)
    mask[0, [0, 17, 50]] = True   # gaps 0, 16 (one filler), 32 (two fillers)
    mask[1, [15, 31]] = True      # gaps 15, 15: no filler
    enc = mask_encodings(mask)
    assert enc["csr_16bit_columns"] == pytest.approx((16 * 5 + 32 * 3) / 120, abs=1e-5)
    assert enc["relative_csr_4bit_gaps"] == pytest.approx((4 * (5 + 3) + 32 * 3) / 120, abs=1e-5)
    assert enc["relative_csr_filler_entries_per_kept"] == pytest.approx(3 / 5)
    assert enc["entropy_random_mask"] == pytest.approx(-(5 / 120) * np.log2(5 / 120) - (115 / 120) * np.log2(115 / 120),
                                                       abs=1e-5)


def test_bim_bench_smoke(capsys):
    """The benchmark's JSON: BIM points with sparsity met, and the baselines computed from their definitions."""
    from sim.bench import __main__ as bench

    assert bench.main(["bim", "--rows", "128", "--cols", "256", "--sparsity", "0.9", "--tiles", "32x32", "--ranks",
                       "2", "--no-lenet", "--accuracy-seeds", "--unpacker-boards"]) == 0
    result = json.loads(capsys.readouterr().out)
    point = result["gaussian"]["points"][0]
    assert point["index_bits_per_weight"] == 2 * (32 + 32) / (32 * 32)
    assert abs(point["achieved_sparsity"] - 0.9) <= 0.005
    assert 0 < point["kept_magnitude"] <= point["magnitude_pruning_kept_magnitude"]
    baselines = result["gaussian"]["mask_encodings"][0]
    entropy = -(0.9 * np.log2(0.9) + 0.1 * np.log2(0.1))
    assert baselines["bitmap"] == 1.0 and baselines["entropy_random_mask"] == pytest.approx(entropy, abs=1e-4)
    # CSR with 16-bit columns and 32-bit row pointers: 16 bits per kept weight plus (rows + 1) pointers.
    kept = round(0.1 * 128 * 256)
    assert baselines["csr_16bit_columns"] == pytest.approx((16 * kept + 32 * 129) / (128 * 256), abs=2e-3)
    assert "accuracy" not in result and "unpacker" not in result
