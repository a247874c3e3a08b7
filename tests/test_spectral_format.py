"""Sparse spectral layer format: magnitude pruning, quantization, the bank-conflict-free schedule and its
checker, the .npz file and its rejection of malformed files."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.compress.spectral import (
    calibrate,
    compress_spatial,
    layer_from_half,
    prune_mask,
    quantize_values,
    schedule_entries,
    schedule_layer,
    schedule_stats,
)
from hw.spec.spectral import file as golden
from hw.spec.spectral.file import load_spectral, save_spectral
from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.geometry import OaaParams, canonical_mask, half_to_full, kernel_spectrum, self_conjugate_mask
from hw.spec.spectral.layer import Schedule, SpectralFormatError, SpectralLayer, check_schedule, stream_entries
from hw.spec.spectral.operator import spectral_conv_float

CANONICAL = int(canonical_mask(8).sum())  # 34

# --- pruning and quantization ----------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75, 0.9, 1.0])
def test_prune_mask_hits_the_sparsity_and_keeps_the_largest(sparsity):
    rng = np.random.default_rng(1)
    half = kernel_spectrum(rng.standard_normal((6, 5, 3, 3)), 8)
    keep = prune_mask(half, sparsity)
    assert not keep[..., ~canonical_mask(8)].any()
    total = 6 * 5 * CANONICAL
    assert keep.sum() == total - int(np.floor(sparsity * total + 0.5))
    mag = np.abs(half)[..., canonical_mask(8)]
    kept = keep[..., canonical_mask(8)]
    if 0 < kept.sum() < kept.size:
        assert mag[kept].min() >= mag[~kept].max()
    per_kernel = prune_mask(half, sparsity, scope="kernel")
    assert (per_kernel.sum(axis=(2, 3)) == CANONICAL - int(np.floor(sparsity * CANONICAL + 0.5))).all()


def test_prune_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sparsity"):
        prune_mask(np.zeros((1, 1, 8, 5)), 1.5)
    with pytest.raises(ValueError, match="scope"):
        prune_mask(np.zeros((1, 1, 8, 5)), 0.5, scope="row")


def test_compressed_layer_is_hermitian_and_hits_the_sparsity():
    rng = np.random.default_rng(2)
    layer = compress_spatial(rng.standard_normal((8, 4, 3, 3)), OaaParams(), 0.75)
    assert layer.density() == pytest.approx(0.25, abs=0.002)
    full = half_to_full(layer.half_spectrum())
    neg = (-np.arange(8)) % 8
    assert np.array_equal(full, np.conj(full[..., neg, :][..., neg]))
    assert np.abs(np.fft.ifft2(full).imag).max() < 1e-12 * np.abs(full).max()
    assert np.count_nonzero(full) <= 2 * layer.nnz  # each stored bin is itself and at most one partner


def test_layer_from_half_reads_canonical_bins_only():
    half = np.zeros((1, 1, 8, 5), dtype=complex)
    half[0, 0, 0, 0] = 2 + 3j     # self-conjugate: the imaginary part goes
    half[0, 0, 7, 0] = 5 + 5j     # not canonical: ignored
    half[0, 0, 3, 2] = -1 + 0.5j
    half[0, 0, 1, 1] = 1e-9       # rounds to zero at the layer's scale: not stored
    layer = layer_from_half(half, OaaParams())
    assert layer.index.tolist() == [0, 3 * 5 + 2] and layer.counts.tolist() == [[2]]
    assert layer.re.tolist() == [32767, -16384] and layer.im.tolist() == [0, 8192]
    assert layer.weight_scale == pytest.approx(2 / 32767, rel=1e-7)


def test_quantize_values():
    re, im, scale = quantize_values(np.array([1 - 4j, 0.5 + 2j, 0j]))
    assert scale == float(np.float32(4 / 32767))
    assert re.dtype == np.int16 and im.tolist() == [-32767, 16384, 0] and re.tolist() == [8192, 4096, 0]
    assert quantize_values(np.zeros(0))[2] == 1.0


# --- the schedule ----------------------------------------------------------------------------------------


def _check_groups(index: np.ndarray, order: np.ndarray, p: int, b: int) -> None:
    """The schedule's contract, from first principles."""
    groups = order.reshape(-1, p)
    real = groups >= 0
    assert sorted(groups[real].tolist()) == list(range(index.size)), "an entry lost or duplicated"
    slot_banks = np.where(real, index[np.maximum(groups, 0)] % b, -1)
    for row_real, banks in zip(real, slot_banks):
        assert row_real.any(), "a group of padding only"
        assert len(set(banks[row_real].tolist())) == row_real.sum(), "two entries in one bank"
    counts = np.bincount(index % b, minlength=b)
    assert groups.shape[0] == max(-(-index.size // p), int(counts.max(initial=0))), "not the fewest groups"


@given(st.integers(1, 8), st.integers(0, 6), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
@settings(max_examples=120, deadline=None)
def test_schedule_kernel_is_conflict_free_and_minimal(p, extra, seed, density):
    rng = np.random.default_rng(seed)
    b = p + extra
    canon = np.flatnonzero(canonical_mask(8).reshape(-1))
    index = np.sort(rng.choice(canon, size=int(density * canon.size), replace=False))
    order = schedule_entries(index, p, b)
    assert order.size % p == 0
    _check_groups(index, order, p, b)


@given(st.integers(1, 5), st.integers(0, 4), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_layer_schedule_passes_the_checker_and_streams_zero_padding(p, extra, seed):
    rng = np.random.default_rng(seed)
    half = np.where(rng.random((3, 2, 8, 5)) < rng.random(), rng.standard_normal((3, 2, 8, 5)) + 0.1, 0)
    layer = layer_from_half(half, OaaParams(), p=p, b=p + extra)
    sch = layer.schedule
    check_schedule(sch, layer.counts, layer.index, 8)
    s = stream_entries(layer)
    assert s["index"].size == int(sch.groups.sum()) * p
    assert (s["re"][~s["valid"]] == 0).all() and (s["im"][~s["valid"]] == 0).all()
    banks = (s["index"] % sch.b).reshape(-1, p)
    assert (np.diff(banks, axis=1) > 0).all(), "slots not in ascending, distinct banks"
    if sch.b == p:
        assert (banks == np.arange(p)).all(), "with p = b lane j must read bank j"
    assert (np.diff(s["out"]) >= 0).all(), "output channels out of order"
    # The fewest groups per output channel: its entries over the lanes, or its fullest bank.
    per_out = layer.counts.sum(axis=1)
    fullest = [np.bincount(layer.index[layer.kernel_of_entry() // layer.c_in == o] % sch.b, minlength=sch.b).max()
               for o in range(layer.c_out)]
    assert sch.groups.tolist() == [max(-(-n // p), int(f)) for n, f in zip(per_out, fullest)]
    kernels = s["out"] * layer.c_in + s["in"]
    # Every stored entry streams exactly once, with its value.
    got = sorted(zip(kernels[s["valid"]].tolist(), s["index"][s["valid"]].tolist(), s["re"][s["valid"]].tolist()))
    want = sorted(zip(layer.kernel_of_entry().tolist(), layer.index.tolist(), layer.re.astype(int).tolist()))
    assert got == want


def test_schedule_by_hand():
    # banks at b = 4: 0, 1, 1, 5 % 4 = 1, 4 % 4 = 0 -> bank 1 holds three entries: three groups.
    index = np.array([0, 1, 4, 5, 9])
    order = schedule_entries(index, 2, 4)
    assert order.reshape(-1, 2).tolist() == [[0, 1], [2, 3], [-1, 4]]
    # Padding takes the lowest free bank and the slots run by bank.
    assert schedule_entries(np.array([3]), 2, 4).tolist() == [-1, 0]
    assert schedule_entries(np.array([2, 3]), 4, 4).tolist() == [-1, -1, 0, 1]
    sch = schedule_layer(np.array([[5, 0]]), index, 2, 4)
    assert sch.groups.tolist() == [3] and sch.order.tolist() == order.tolist()


def test_a_group_takes_entries_of_several_kernels():
    """Output channel 0's three kernels hold one, two and one entries on distinct banks: one group of four lanes
    reads input channels 0, 1, 1, 2 (per kernel, three groups would leave 8 of 12 lane-cycles idle); output
    channel 1's single entry gets padding that reads its input channel."""
    counts = np.array([[1, 2, 1], [0, 0, 1]])
    index = np.array([2, 0, 3, 1, 6])  # kernel (0, 0): bin 2; (0, 1): 0, 3; (0, 2): 1; (1, 2): 6
    layer = SpectralLayer(OaaParams(), 2, 3, counts, index, np.arange(1, 6, dtype=np.int16),
                          np.zeros(5, dtype=np.int16), 1.0, np.zeros(2, dtype=np.float32),
                          schedule=schedule_layer(counts, index, 4, 4))
    assert layer.schedule.groups.tolist() == [1, 1]
    s = stream_entries(layer)
    assert s["index"].tolist() == [0, 1, 2, 3, 0, 1, 6, 3]  # bank order; padding on the lowest free banks
    assert s["in"].tolist() == [1, 2, 0, 1, 2, 2, 2, 2] and s["valid"].tolist() == [1, 1, 1, 1, 0, 0, 1, 0]
    assert s["re"].tolist() == [2, 4, 1, 3, 0, 0, 5, 0]


@pytest.mark.parametrize("p, b", [(2, 2), (4, 4), (8, 8), (4, 8)])
def test_lane_utilisation(p, b):
    rng = np.random.default_rng(0)
    layer = compress_spatial(rng.standard_normal((16, 16, 3, 3)), OaaParams(), 0.75, p=p, b=b)
    stats = schedule_stats(layer)
    assert stats["entries"] == layer.nnz and stats["lane_cycles"] == stats["groups"] * p
    assert stats["utilization"] == pytest.approx(layer.nnz / (stats["groups"] * p))
    assert stats["utilization"] <= stats["utilization_no_banks"] <= 1.0
    # Measured on 64 x 64 random 3 x 3 kernels at 75 %: 0.89 (2, 2), 0.69 (4, 4), 0.56 (8, 8), 0.82 (4, 8).
    assert stats["utilization"] > {(2, 2): 0.85, (4, 4): 0.64, (8, 8): 0.5, (4, 8): 0.76}[(p, b)]


def _layer(seed: int = 5, quant: bool = True, p: int = 3, b: int = 4, relu: bool = True) -> SpectralLayer:
    rng = np.random.default_rng(seed)
    layer = compress_spatial(rng.standard_normal((4, 3, 3, 3)), OaaParams(8, 3, 5, "valid"), 0.7, p=p, b=b,
                             bias=rng.standard_normal(4), relu=relu)
    return calibrate(layer, rng.integers(-128, 128, (2, 3, 9, 9)), 0.02) if quant else layer


def _with_order(layer: SpectralLayer, order: np.ndarray, groups: np.ndarray | None = None) -> Schedule:
    sch = layer.schedule
    return Schedule(sch.p, sch.b, sch.groups if groups is None else groups, order)


def test_checker_rejects_broken_schedules():
    layer = _layer()
    sch = layer.schedule
    groups = sch.order.reshape(-1, sch.p)
    first = int(np.argmax((groups >= 0).sum(axis=1) >= 2))  # a group with two entries
    a, b = np.flatnonzero(groups[first] >= 0)[:2]

    def rejected(order, message, groups_=None):
        with pytest.raises(SpectralFormatError, match=f"field 'order': .*{message}"):
            check_schedule(_with_order(layer, order.reshape(-1), groups_), layer.counts, layer.index, 8)

    swapped = groups.copy()
    swapped[first, [a, b]] = swapped[first, [b, a]]
    rejected(swapped, "ascending bank order")
    dup = groups.copy()
    dup[first, b] = dup[first, a]
    rejected(dup, "appears")
    out = groups.copy()
    out[first, a] = 99
    rejected(out, "position outside")
    # A group of padding only (after output channel 0's groups).
    g0 = int(sch.groups[0])
    more = sch.groups.copy()
    more[0] += 1
    rejected(np.concatenate([groups[:g0], np.full((1, sch.p), -1), groups[g0:]]), "only padding", more)
    with pytest.raises(SpectralFormatError, match="field 'b'"):
        check_schedule(Schedule(4, 3, sch.groups, sch.order), layer.counts, layer.index, 8)
    with pytest.raises(SpectralFormatError, match="field 'groups'"):
        check_schedule(Schedule(sch.p, sch.b, sch.groups[:1], sch.order), layer.counts, layer.index, 8)


def test_checker_names_two_entries_in_one_bank():
    oaa = OaaParams()
    counts = np.array([[2]])
    index = np.array([1, 5])  # banks 1 and 1 at b = 4
    with pytest.raises(SpectralFormatError, match="two entries in one bank"):
        check_schedule(Schedule(2, 4, np.array([1]), np.array([0, 1])), counts, index, oaa.n)
    check_schedule(Schedule(2, 4, np.array([2]), np.array([-1, 0, -1, 1])), counts, index, oaa.n)


# --- the file --------------------------------------------------------------------------------------------


def _same(a: SpectralLayer, b: SpectralLayer) -> bool:
    arrays = ("counts", "index", "re", "im", "bias")
    same = (a.oaa == b.oaa and (a.c_out, a.c_in, a.relu) == (b.c_out, b.c_in, b.relu)
            and a.weight_scale == b.weight_scale
            and all(np.array_equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype
                    for f in arrays)
            and (a.schedule.p, a.schedule.b) == (b.schedule.p, b.schedule.b)
            and np.array_equal(a.schedule.groups, b.schedule.groups)
            and np.array_equal(a.schedule.order, b.schedule.order))
    if a.quant is None or b.quant is None:
        return same and a.quant is None and b.quant is None
    qa, qb = a.quant, b.quant
    return same and (qa.in_scale, qa.out_scale, qa.mac_shift, qa.out_mult, qa.out_shift) == (
        qb.in_scale, qb.out_scale, qb.mac_shift, qb.out_mult, qb.out_shift) and np.array_equal(qa.bias_q, qb.bias_q)


@given(st.integers(0, 2**32 - 1), st.booleans(), st.integers(1, 4), st.integers(0, 3), st.booleans())
@settings(max_examples=25, deadline=None)
def test_file_round_trip(tmp_path_factory, seed, quant, p, extra, relu):
    layer = _layer(seed, quant, p, p + extra, relu)
    path = tmp_path_factory.mktemp("spec2") / "layer.spec2.npz"
    save_spectral(path, layer)
    back = load_spectral(path)
    assert _same(back, layer)
    x = np.random.default_rng(seed).integers(-128, 128, (3, 7, 8))
    assert np.array_equal(spectral_conv_float(x, back), spectral_conv_float(x, layer))
    if quant:
        assert np.array_equal(spectral_conv_fixed(x, back), spectral_conv_fixed(x, layer))


def test_save_needs_a_schedule(tmp_path: Path):
    layer = dataclasses.replace(_layer(), schedule=None)
    with pytest.raises(ValueError, match="no schedule"):
        save_spectral(tmp_path / "x.npz", layer)


def _fields(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(path: Path, fields: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **fields)


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "layer.spec2.npz"
    save_spectral(path, _layer())
    return path


@pytest.mark.parametrize("field", list(golden._REQUIRED) + list(golden._QUANT))
def test_missing_field_is_named(good_file, field):
    fields = _fields(good_file)
    del fields[field]
    _rewrite(good_file, fields)
    with pytest.raises(SpectralFormatError, match=f"missing field '{field}'"):
        load_spectral(good_file)


def test_a_version_1_file_reads_as_its_per_kernel_schedule(good_file):
    """Version 1 stored groups per kernel (positions within the kernel): read, it is the schedule whose groups
    stay within their kernels, streaming the same slots in the same order."""
    layer = load_spectral(good_file)
    counts, p, b = layer.counts, layer.schedule.p, layer.schedule.b
    bounds = np.concatenate([[0], np.cumsum(counts.reshape(-1))])
    per_kernel = [schedule_entries(layer.index[bounds[k]:bounds[k + 1]], p, b) for k in range(counts.size)]
    fields = _fields(good_file)
    fields.update({"version": np.int64(1), "order": np.concatenate(per_kernel).astype(np.int32),
                   "groups": np.array([o.size // p for o in per_kernel], dtype=np.int32).reshape(counts.shape)})
    _rewrite(good_file, fields)
    old = load_spectral(good_file)
    assert old.schedule.groups.tolist() == fields["groups"].sum(axis=1).tolist()
    s = stream_entries(old)
    kernels = np.repeat(np.repeat(np.arange(counts.size), fields["groups"].reshape(-1)), p)
    assert (s["out"] * layer.c_in + s["in"])[s["valid"]].tolist() == kernels[s["valid"]].tolist()
    position = np.concatenate(per_kernel)
    assert s["index"][s["valid"]].tolist() == layer.index[bounds[kernels] + position][position >= 0].tolist()
    fields["order"][np.argmax(fields["order"] >= 0)] = 99  # past its kernel's entries, within the channel's
    _rewrite(good_file, fields)
    with pytest.raises(SpectralFormatError, match=r"field 'order': a slot of kernel \(o=0, i=0\) outside"):
        load_spectral(good_file)


def _swap_index_order(f):
    index = f["index"].copy()
    index[0], index[1] = index[1], index[0]
    return {"index": index}


def _non_canonical(f):
    index = f["index"].copy()
    index[0] = 7 * 5  # row 7 of column 0: the partner of row 1
    return {"index": index}


def _imag_on_self_conjugate(f):
    im = f["im"].copy()
    im[int(np.flatnonzero(self_conjugate_mask(8).reshape(-1)[f["index"]])[0])] = 5
    return {"im": im}


def _zero_entry(f):
    re, im = f["re"].copy(), f["im"].copy()
    re[3] = im[3] = 0
    return {"re": re, "im": im}


def _order_dup(f):
    order = f["order"].copy()
    groups = order.reshape(-1, int(f["p"]))
    row = int(np.argmax((groups >= 0).sum(axis=1) >= 2))
    a, b = np.flatnonzero(groups[row] >= 0)[:2]
    groups[row, b] = groups[row, a]
    return {"order": groups.reshape(-1)}


@pytest.mark.parametrize("change, field, message", [
    (lambda f: {"version": np.int64(3)}, "version", "unknown version 3"),
    (lambda f: {"version": np.float64(1)}, "version", "integer scalar"),
    (lambda f: {"n": np.int64(6)}, "n", "power of two"),
    (lambda f: {"l": np.int64(7)}, "n", "l + k - 1"),
    (lambda f: {"k": np.int64(0)}, "k", "k must be"),
    (lambda f: {"padding": np.array("full")}, "padding", "padding must be"),
    (lambda f: {"padding": np.int64(0)}, "padding", "string scalar"),
    (lambda f: {"relu": np.int64(2)}, "relu", "0 or 1"),
    (lambda f: {"c_out": np.int64(0)}, "c_out", ">= 1"),
    (lambda f: {"c_in": np.int64(2)}, "counts", "shape (4, 2)"),
    (lambda f: {"p": np.int64(0)}, "p", ">= 1"),
    (lambda f: {"b": np.int64(2)}, "b", "at least p=3"),
    (lambda f: {"b": np.int64(41)}, "b", "at most the 40 bins"),
    (lambda f: {"counts": f["counts"].astype(np.int64)}, "counts", "int32"),
    (lambda f: {"counts": np.where(f["counts"] > 0, 35, 0).astype(np.int32)}, "counts", "0..34"),
    (lambda f: {"index": f["index"][:-1]}, "index", "shape"),
    (lambda f: {"index": f["index"].astype(np.int32)}, "index", "uint16"),
    (_swap_index_order, "index", "strictly ascending"),
    (lambda f: {"index": np.where(np.arange(f["index"].size) == 0, 40, f["index"]).astype(np.uint16)}, "index",
     "outside 0..39"),
    (_non_canonical, "index", "not canonical"),
    (lambda f: {"re": f["re"].astype(np.int32)}, "re", "int16"),
    (lambda f: {"im": f["im"][:-1]}, "im", "sum of counts"),
    (_zero_entry, "re", "is zero"),
    (_imag_on_self_conjugate, "im", "must be real"),
    (lambda f: {"weight_scale": np.float32(-1)}, "weight_scale", "> 0"),
    (lambda f: {"weight_scale": np.float32(np.nan)}, "weight_scale", "> 0"),
    (lambda f: {"weight_scale": np.float64(1)}, "weight_scale", "float32 scalar"),
    (lambda f: {"bias": f["bias"][:2]}, "bias", "shape (4,)"),
    (lambda f: {"bias": np.full(4, np.inf, dtype=np.float32)}, "bias", "non-finite"),
    (lambda f: {"groups": f["groups"] + 1}, "order", "shape"),
    (lambda f: {"groups": -f["groups"]}, "groups", "negative"),
    (lambda f: {"order": f["order"].astype(np.int16)}, "order", "int32"),
    (_order_dup, "order", "appears"),
    (lambda f: {"in_scale": np.float32(0)}, "in_scale", "> 0"),
    (lambda f: {"out_scale": np.float64(1)}, "out_scale", "float32 scalar"),
    (lambda f: {"mac_shift": np.int64(63)}, "mac_shift", "0..62"),
    (lambda f: {"out_mult": np.int64(0)}, "out_mult", "out_mult must be"),
    (lambda f: {"out_shift": np.float64(3)}, "out_shift", "integer scalar"),
    (lambda f: {"bias_q": f["bias_q"].astype(np.int32)}, "bias_q", "int64"),
])
def test_malformed_file_is_rejected_naming_the_field(good_file, change, field, message):
    fields = _fields(good_file)
    fields.update(change(fields))
    _rewrite(good_file, fields)
    with pytest.raises(SpectralFormatError) as info:
        load_spectral(good_file)
    text = str(info.value)
    assert f"field '{field}'" in text and message in text and "\n" not in text, text
    assert text.startswith(str(good_file))


def test_quantization_fields_come_all_or_none(good_file):
    fields = _fields(good_file)
    for name in golden._QUANT:
        del fields[name]
    _rewrite(good_file, fields)
    assert load_spectral(good_file).quant is None


def test_not_an_npz_and_pickles_are_rejected(tmp_path: Path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(SpectralFormatError, match="not an .npz archive"):
        load_spectral(npy)
    with pytest.raises(SpectralFormatError, match="no such file"):
        load_spectral(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(SpectralFormatError, match="unreadable .npz"):
        load_spectral(broken)
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(pickled, "w") as z, z.open("version.npy", "w") as f:
        np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SpectralFormatError, match="unreadable .npz"):
        load_spectral(pickled)


def test_layer_object_checks_itself():
    layer = _layer()
    with pytest.raises(SpectralFormatError, match="field 'index'"):
        dataclasses.replace(layer, index=layer.index[:-1])
    with pytest.raises(SpectralFormatError, match="field 'relu'"):
        dataclasses.replace(layer, relu=1)
    with pytest.raises(SpectralFormatError, match="field 'bias_q'"):
        dataclasses.replace(layer, quant=dataclasses.replace(layer.quant, bias_q=layer.quant.bias_q[:1]))
    with pytest.raises(SpectralFormatError, match="field 'c_in'"):
        dataclasses.replace(layer, c_in=0)


@pytest.mark.parametrize("quant", [True, False])
def test_fields_without_a_file_are_the_file(tmp_path: Path, quant):
    # layer_fields / layer_from_fields are what save_spectral / load_spectral write and read, array for array.
    layer = _layer(7, quant)
    fields = golden.layer_fields(layer)
    save_spectral(tmp_path / "x.npz", layer)
    written = _fields(tmp_path / "x.npz")
    assert sorted(fields) == sorted(written)
    for name, value in written.items():
        assert np.asarray(fields[name]).dtype == value.dtype and np.array_equal(fields[name], value), name
    assert _same(golden.layer_from_fields(fields), layer)
    del fields["order"]
    with pytest.raises(SpectralFormatError, match="missing field 'order'") as info:
        golden.layer_from_fields(fields)
    assert not str(info.value).startswith(str(tmp_path))  # no file, no path prefix
