"""XOR-format encoder: the GF(2) slice solver against brute force, BCQ quantization, n_in choice, whole-matrix
round trips through the file, the CLI and the benchmark."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.compress import __main__ as cli
from host.compress.xor import bcq_quantize, choose_n_in, compress_xor, encode_slices
from hw.spec.xor import (
    bcq_dequantize,
    care_slices,
    decode_slices,
    load_xor,
    planes_to_slices,
    save_xor,
    xor_matrix,
)

# --- the slice solver ------------------------------------------------------------------------------------


def _check_contract(m, targets, care, result):
    x, counts, positions = result
    s, n_out = targets.shape
    assert x.dtype == np.uint8 and x.shape == (s, m.shape[1]) and set(np.unique(x)) <= {0, 1}
    assert counts.shape == (s,) and counts.dtype.kind == "i" and positions.dtype.kind == "i"
    assert positions.shape == (int(counts.sum()),)
    for slice_positions in np.split(positions, np.cumsum(counts)[:-1]) if s else []:
        assert (np.diff(slice_positions) > 0).all(), "positions not strictly ascending within a slice"
    if positions.size:
        assert care[np.repeat(np.arange(s), counts), positions].all(), "a patch on a don't-care position"
    decoded = decode_slices(m, x, counts, positions)
    assert np.array_equal(decoded[care], targets[care]), "a care bit is not recovered"


def _all_outputs(m: np.ndarray) -> np.ndarray:
    """M x mod 2 for every x, (2^n_in, n_out)."""
    xs = np.array(list(itertools.product((0, 1), repeat=m.shape[1])), dtype=np.uint8)
    return (xs.astype(np.int64) @ m.T.astype(np.int64)) % 2


def _minimum_patches(outputs: np.ndarray, target: np.ndarray, care: np.ndarray) -> int:
    return int(((outputs != target) & care).sum(axis=1).min())


@pytest.mark.parametrize("n_in", [1, 2, 3, 5, 8, 10])
def test_solver_against_brute_force(n_in):
    """Every kept bit recovered; never fewer patches than the minimum; the minimum whenever it is <= 2."""
    rng = np.random.default_rng(n_in)
    stats = {"min0": 0, "min1_2": 0, "greedy_above_min": 0}
    for trial in range(6):
        n_out = int(rng.integers(n_in + 1, 3 * n_in + 8))
        m = xor_matrix(n_out, n_in, trial)
        outputs = _all_outputs(m)
        targets = rng.integers(0, 2, size=(60, n_out), dtype=np.uint8)
        care = rng.random((60, n_out)) < rng.uniform(0.05, 1.0, size=(60, 1))
        result = encode_slices(m, targets, care)
        single = encode_slices(m, targets, care, restarts=0)  # the claim holds without random restarts
        greedy = encode_slices(m, targets, care, search=False)
        for r in (result, single, greedy):
            _check_contract(m, targets, care, r)
        for i in range(60):
            best = _minimum_patches(outputs, targets[i], care[i])
            got = int(result[1][i])
            assert got >= best
            if best == 0:
                stats["min0"] += 1
                assert int(greedy[1][i]) == 0, "greedy misses a zero-patch solution"
            if best <= 2:
                assert got == best == int(single[1][i]), f"slice {i}: {got} patches, minimum {best}"
                stats["min1_2"] += best > 0
                stats["greedy_above_min"] += int(greedy[1][i]) > best
            assert int(greedy[1][i]) >= got
    # The cases the claims are about did occur, including ones plain greedy gets wrong.
    assert stats["min0"] and stats["min1_2"] and stats["greedy_above_min"], stats


def test_search_beats_plain_greedy_somewhere():
    rng = np.random.default_rng(3)
    m = xor_matrix(200, 20, 0)
    targets = rng.integers(0, 2, size=(3000, 200), dtype=np.uint8)
    care = rng.random((3000, 200)) < 0.12
    searched = encode_slices(m, targets, care)[1]
    greedy = encode_slices(m, targets, care, search=False)[1]
    assert (searched <= greedy).all() and searched.sum() < 0.9 * greedy.sum()


@given(st.sampled_from([(3, 4), (16, 128), (24, 200), (63, 100), (64, 512), (65, 130), (70, 140)]),
       st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_solver_contract_over_sizes(sizes, care_probability, seed):
    """Word boundaries included: n_in + 1 bits of a row span one or two uint64 words."""
    n_in, n_out = sizes
    rng = np.random.default_rng(seed)
    m = xor_matrix(n_out, n_in, seed % 97)
    targets = rng.integers(0, 2, size=(40, n_out), dtype=np.uint8)
    care = rng.random((40, n_out)) < care_probability
    _check_contract(m, targets, care, encode_slices(m, targets, care))


def test_solver_edge_cases():
    m = xor_matrix(8, 3, 0)
    empty = encode_slices(m, np.zeros((0, 8), dtype=np.uint8), np.zeros((0, 8), dtype=bool))
    assert empty[0].shape == (0, 3) and empty[1].shape == (0,) and empty[2].shape == (0,)
    targets = np.ones((2, 8), dtype=np.uint8)
    nothing = encode_slices(m, targets, np.zeros((2, 8), dtype=bool))
    assert nothing[1].tolist() == [0, 0] and not nothing[0].any()
    everything = np.ones((2, 8), dtype=bool)
    _check_contract(m, targets, everything, encode_slices(m, targets, everything))


@pytest.mark.parametrize("call, message", [
    (lambda m: encode_slices(m, np.zeros((2, 7), np.uint8), np.zeros((2, 7), bool)), "targets must be"),
    (lambda m: encode_slices(m, np.full((2, 8), 2, np.uint8), np.zeros((2, 8), bool)), "targets must be"),
    (lambda m: encode_slices(m, np.zeros((2, 8), np.uint8), np.zeros((2, 8), np.uint8)), "care must be"),
    (lambda m: encode_slices(m.T, np.zeros((2, 3), np.uint8), np.zeros((2, 3), bool)), "m must be"),
])
def test_solver_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(xor_matrix(8, 3, 0))


def test_solver_is_deterministic():
    rng = np.random.default_rng(4)
    m = xor_matrix(100, 10, 1)
    targets = rng.integers(0, 2, size=(500, 100), dtype=np.uint8)
    care = rng.random((500, 100)) < 0.15
    a, b = encode_slices(m, targets, care), encode_slices(m, targets, care)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


# --- quantization ----------------------------------------------------------------------------------------


def _error(w, mask, alpha, planes) -> float:
    return float(((w.astype(np.float64) - bcq_dequantize(alpha, planes, mask))[mask] ** 2).sum())


@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 80), st.floats(0.0, 0.97), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_als_is_never_worse_than_greedy(bits, rows, cols, sparsity, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 10)).astype(np.float32)
    mask = rng.random((rows, cols)) >= sparsity
    greedy = bcq_quantize(w, mask, bits, als_iters=0)
    als = bcq_quantize(w, mask, bits)
    assert _error(w, mask, *als) <= _error(w, mask, *greedy) * (1 + 1e-6) + 1e-9
    alpha, planes = als
    assert alpha.dtype == np.float32 and alpha.shape == (rows, bits) and (alpha >= 0).all()
    assert planes.dtype == np.uint8 and planes.shape == (bits, rows, cols) and (planes[:, ~mask] == 1).all()


def test_als_improves_on_greedy_for_two_and_three_bits():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 500)).astype(np.float32)
    mask = rng.random(w.shape) < 0.3
    for bits in (2, 3):
        greedy, als = _error(w, mask, *bcq_quantize(w, mask, bits, als_iters=0)), _error(w, mask,
                                                                                         *bcq_quantize(w, mask, bits))
        assert als < 0.97 * greedy, (bits, als, greedy)


def test_one_bit_quantization_is_sign_and_mean_magnitude():
    w = np.array([[1.0, -3.0, 0.0, 5.0], [2.0, 2.0, -2.0, 9.0]], dtype=np.float32)
    mask = np.array([[True, True, True, False], [True, True, True, False]])
    alpha, planes = bcq_quantize(w, mask, 1)
    assert alpha[:, 0].tolist() == pytest.approx([4 / 3, 2.0])
    assert planes[0, :, :3].tolist() == [[1, 0, 1], [1, 1, 0]]  # bit 1 = +1; zero counts as +1


# --- whole matrices --------------------------------------------------------------------------------------


@given(st.integers(1, 40), st.integers(1, 300), st.floats(0.5, 0.97), st.integers(1, 3),
       st.sampled_from([16, 50, 200]), st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_decode_of_encode_is_the_quantized_matrix(tmp_path_factory, rows, cols, sparsity, bits, n_out, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    mask = rng.random((rows, cols)) >= sparsity
    encoded = compress_xor(w, mask, bits=bits, n_out=n_out, seed=seed % 1000)
    path = tmp_path_factory.mktemp("xor") / "w.xor.npz"
    save_xor(path, encoded)
    loaded = load_xor(path)
    alpha, planes = bcq_quantize(w, mask, bits)
    assert np.array_equal(loaded.planes()[:, mask], planes[:, mask])
    dense = loaded.dense()
    assert np.array_equal(dense, bcq_dequantize(alpha, planes, mask))
    assert (dense[~mask] == 0).all()
    assert loaded.storage_bits() == encoded.storage_bits()


def test_fixed_n_in_and_no_mask():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((30, 70)).astype(np.float32)
    mask = rng.random(w.shape) < 0.1
    encoded = compress_xor(w, mask, n_in=6, n_out=64, keep_mask=False)
    assert encoded.params.n_in == 6 and encoded.mask is None
    with pytest.raises(ValueError, match="n_out must be"):
        compress_xor(w, mask, n_in=64, n_out=64)


def test_choose_n_in_near_the_care_count():
    rng = np.random.default_rng(1)
    mask = rng.random((400, 1000)) >= 0.91
    planes = rng.integers(0, 2, size=(1, 400, 1000), dtype=np.uint8)
    choice = choose_n_in(planes_to_slices(planes, 200), care_slices(mask, 200), seed=0)
    assert choice.bits_per_slice[choice.n_in] == min(choice.bits_per_slice.values())
    assert 17 <= choice.n_in <= 23, choice
    # It is a minimum of the cost it reports: both neighbours were measured and cost more or the same.
    assert {choice.n_in - 1, choice.n_in + 1} <= set(choice.bits_per_slice)


# --- CLI and benchmark -----------------------------------------------------------------------------------


@pytest.fixture
def arrays(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 90)).astype(np.float32)
    mask = rng.random(w.shape) >= 0.8
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "mask.npy", mask)
    np.save(tmp_path / "mask01.npy", mask.astype(np.uint8))
    np.save(tmp_path / "mask_bad.npy", mask.astype(np.int32) * 2)
    np.save(tmp_path / "mask_small.npy", mask[:, :10])
    np.save(tmp_path / "w3d.npy", w[None])
    return tmp_path


def test_cli_round_trip(arrays: Path, capsys):
    d = arrays
    assert cli.main(["xor", "--weights", str(d / "w.npy"), "--mask", str(d / "mask01.npy"), "--bits", "2",
                     "--n-out", "64", "--n-in", "auto", "--out", str(d / "w.xor.npz")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bits"] == 2 and summary["n_in_auto"] and summary["bits_per_weight"] > 0
    assert cli.main(["xor-decode", str(d / "w.xor.npz"), "--out", str(d / "back.npy")]) == 0
    w, mask = np.load(d / "w.npy"), np.load(d / "mask.npy")
    assert np.array_equal(np.load(d / "back.npy"), bcq_dequantize(*bcq_quantize(w, mask, 2), mask))
    assert cli.main(["xor-decode", str(d / "w.xor.npz"), "--planes", "--out", str(d / "planes.npy")]) == 0
    assert np.load(d / "planes.npy").shape == (2, 40, 90)


@pytest.mark.parametrize("argv, message", [
    (["--mask", "mask_bad.npy"], "--mask: expected a boolean or 0/1 array"),
    (["--mask", "mask_small.npy"], "--mask: shape (40, 10) does not match the weights' (40, 90)"),
    (["--weights", "w3d.npy"], "--weights: expected a non-empty 2-D matrix"),
    (["--weights", "missing.npy"], "--weights: no such file"),
    (["--n-in", "64", "--n-out", "64"], "n_out must be"),
    (["--bits", "0"], "bits must be"),
])
def test_cli_one_line_errors(arrays: Path, capsys, argv, message):
    base = {"--weights": "w.npy", "--mask": "mask.npy", "--out": "out.npz"}
    args = ["xor"]
    overrides = dict(zip(argv[::2], argv[1::2]))
    for key, value in {**base, **overrides}.items():
        args += [key, str(arrays / value) if value.endswith((".npy", ".npz")) else value]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_decode_errors(arrays: Path, capsys):
    d = arrays
    assert cli.main(["xor", "--weights", str(d / "w.npy"), "--mask", str(d / "mask.npy"), "--no-mask",
                     "--out", str(d / "w.xor.npz")]) == 0
    capsys.readouterr()
    assert cli.main(["xor-decode", str(d / "w.xor.npz"), "--out", str(d / "back.npy")]) == 2
    assert "carries no mask" in capsys.readouterr().err
    assert cli.main(["xor-decode", str(d / "w.xor.npz"), "--mask", str(d / "mask.npy"),
                     "--out", str(d / "back.npy")]) == 0
    assert cli.main(["xor-decode", str(d / "w.npy"), "--out", str(d / "back.npy")]) == 2
    assert "not an .npz archive" in capsys.readouterr().err


def test_bench_smoke(capsys):
    from sim.bench import __main__ as bench

    assert bench.main(["xor", "--rows", "64", "--cols", "400", "--sparsity", "0.91", "--bits", "1", "2",
                       "--decoder-boards"]) == 0
    result = json.loads(capsys.readouterr().out)
    # Two asked for, plus the target point (s = 0.91, q = 1) again at n_out = 256.
    assert result["all_kept_bits_recovered"] and len(result["points"]) == 3 and "decoder" not in result
    assert [t["n_out"] for t in result["at_target_point"]] == [200, 256]
    point = result["points"][0]
    assert point["bound"] == 0.09 and point["bits_per_weight"] > point["bound"]
    assert sum(point["parts_bits_per_weight"].values()) == pytest.approx(point["bits_per_weight"], abs=1e-4)


@pytest.mark.slow
def test_fc6_sized_matrix_at_91_percent():
    """The issue's operating point: 4096 x 9216, s = 0.91, q = 1, n_out = 200, n_in auto."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4096, 9216), dtype=np.float32)
    mask = rng.random(w.shape) >= 0.91
    started = time.perf_counter()
    encoded = compress_xor(w, mask, bits=1, n_out=200)
    seconds = time.perf_counter() - started
    bits_per_weight = encoded.storage_bits()["total"] / w.size
    assert bits_per_weight < 0.1215, bits_per_weight  # measured 0.1205; the bound is 0.09, the paper 0.28
    assert seconds < 60, seconds
    alpha, planes = bcq_quantize(w, mask, 1)
    assert np.array_equal(encoded.planes()[:, mask], planes[:, mask])
