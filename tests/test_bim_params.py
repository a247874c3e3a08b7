"""BimUnpackerParams / SparseExpanderParams: bad parameters are rejected with a one-line message naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from hw.bim_unpacker import BimUnpacker, BimUnpackerParams, SparseExpander, SparseExpanderParams


@pytest.mark.parametrize("fields, message", [
    ({"m_t": 0}, r"^m_t must be >= 1, got 0$"),
    ({"n_t": -3}, r"^n_t must be >= 1, got -3$"),
    ({"r": 0}, r"^r must be >= 1, got 0$"),
    ({"m_t": 8.0}, r"^m_t must be an integer, got 8\.0$"),
    ({"n_t": "64"}, r"^n_t must be an integer, got '64'$"),
    ({"r": True}, r"^r must be an integer, got True$"),
    ({"r": np.bool_(True)}, r"^r must be an integer, got (np\.)?True_?$"),
    ({"r": None}, r"^r must be an integer, got None$"),
])
def test_bad_unpacker_parameters_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        BimUnpackerParams(**{"m_t": 8, "n_t": 8, "r": 2, **fields})


@pytest.mark.parametrize("fields, message", [
    ({"n_t": 0}, r"^n_t must be >= 1, got 0$"),
    ({"value_width": 0}, r"^value_width must be >= 1, got 0$"),
    ({"values_per_beat": -1}, r"^values_per_beat must be >= 1, got -1$"),
    ({"value_width": 4.5}, r"^value_width must be an integer, got 4\.5$"),
    ({"values_per_beat": False}, r"^values_per_beat must be an integer, got False$"),
])
def test_bad_expander_parameters_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        SparseExpanderParams(**{"n_t": 8, "value_width": 4, "values_per_beat": 2, **fields})


def test_components_take_only_their_params():
    with pytest.raises(TypeError, match=r"^params must be a BimUnpackerParams, got dict$"):
        BimUnpacker({"m_t": 8, "n_t": 8, "r": 2})
    with pytest.raises(TypeError, match=r"^params must be a SparseExpanderParams, got BimUnpackerParams$"):
        SparseExpander(BimUnpackerParams(8, 8, 2))


def test_params_hash_and_describe():
    """NumPy integers are accepted and stored as ints: equal parameters compare and hash equal."""
    a, b = BimUnpackerParams(64, 64, 8), BimUnpackerParams(np.int64(64), np.int32(64), np.uint8(8))
    assert a == b and len({a, b}) == 1 and type(b.r) is int
    assert a.describe() == {"m_t": 64, "n_t": 64, "r": 8}
    assert BimUnpackerParams(4, 64, 9).r == 9  # the format allows r > min(m_t, n_t); so does the hardware
    e = SparseExpanderParams(64, 8, 8)
    assert e == SparseExpanderParams(np.int16(64), 8, 8)
    assert e.describe() == {"n_t": 64, "value_width": 8, "values_per_beat": 8}


@pytest.mark.parametrize("r, width", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (64, 6)])
def test_z_row_width_is_ceil_log2_at_least_one(r, width):
    assert BimUnpackerParams(64, 64, r).z_row_width == width


@pytest.mark.parametrize("n_t, per_beat, window", [(8, 2, 5), (64, 8, 9), (32, 4, 9), (7, 5, 3), (1, 1, 1), (4, 9, 2)])
def test_expander_window_covers_a_full_row_from_any_offset(n_t, per_beat, window):
    params = SparseExpanderParams(n_t, 8, per_beat)
    assert params.window_beats == window
    # A full row (n_t values) starting at the head beat's last value must fit the window.
    assert (per_beat - 1 + n_t) <= window * per_beat < (per_beat - 1 + n_t) + per_beat
    assert params.queue_beats == window + 1


@pytest.mark.parametrize("argv, message", [
    (["--block", "bim", "--m-t", "0"], "m_t must be >= 1, got 0"),
    (["--block", "bim", "--rank", "-2"], "r must be >= 1, got -2"),
])
def test_characterise_cli_rejects_bad_unpacker_parameters(capsys, argv, message):
    from hw.characterise import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")
