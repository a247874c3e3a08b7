"""XorDecoderParams: bad parameters are rejected at elaboration with a one-line message naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from hw.xor_decoder import XorDecoder, XorDecoderParams

# The paper's Figure 4 toy (n_out=4, n_in=3): full column rank.
TOY = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]


def params(**overrides) -> XorDecoderParams:
    fields = {"n_in": 3, "n_out": 4, "max_patches": 2, "m": TOY, **overrides}
    return XorDecoderParams(**fields)


@pytest.mark.parametrize("overrides, message", [
    ({"n_in": 0, "m": [[0]] * 4}, r"^n_in must be >= 1, got 0$"),
    ({"n_in": -1}, r"^n_in must be >= 1, got -1$"),
    ({"n_out": 3}, r"^n_out must be greater than n_in=3, got 3$"),
    ({"n_out": 2}, r"^n_out must be greater than n_in=3, got 2$"),
    ({"n_out": 0}, r"^n_out must be greater than n_in=3, got 0$"),
    ({"max_patches": 0}, r"^max_patches must be >= 1, got 0$"),
    ({"xor_fanin": 1}, r"^xor_fanin must be >= 2, got 1$"),
    ({"n_in": 3.0}, r"^n_in must be an integer, got 3\.0$"),
    ({"max_patches": True}, r"^max_patches must be an integer, got True$"),
    ({"m": [row + [0] for row in TOY]}, r"^m must have shape \(n_out, n_in\) = \(4, 3\), got \(4, 4\)$"),
    ({"m": TOY[:3]}, r"^m must have shape \(n_out, n_in\) = \(4, 3\), got \(3, 3\)$"),
    ({"m": np.array(TOY).T}, r"^m must have shape \(n_out, n_in\) = \(4, 3\), got \(3, 4\)$"),
    ({"m": [1, 2, 4]}, r"^m must have n_out=4 rows, got 3 row bit-masks$"),
    ({"m": [1, 2, 4, 8]}, r"^m row 3 bit-mask 0x8 does not fit n_in=3 columns$"),
    ({"m": [1, 2, -4, 7]}, r"^m row 2 bit-mask -0x4 does not fit n_in=3 columns$"),
    ({"m": [[1, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]}, r"^m must have shape \(n_out, n_in\) = \(4, 3\), got \(4,\)$"),
    ({"m": [[2, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]}, r"^m entries must all be 0 or 1$"),
    ({"m": [[1, 0, 0], [0, 0.5, 0], [0, 0, 1], [1, 1, 1]]}, r"^m entries must all be 0 or 1$"),
    ({"m": "1010"}, r"^m must be a matrix or a sequence of row bit-masks, got str$"),
    # Rank: a zero column, a repeated column, a column that is the sum of the others.
    ({"m": [[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]}, r"^m must have full column rank n_in=3 .*got rank 2$"),
    ({"m": [[1, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]]}, r"^m must have full column rank n_in=3 .*got rank 2$"),
    ({"m": [[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]]}, r"^m must have full column rank n_in=3 .*got rank 2$"),
    ({"m": [0b001, 0b010, 0b011, 0b000]}, r"^m must have full column rank n_in=3 .*got rank 2$"),
])
def test_bad_parameters_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        XorDecoder(params(**overrides))


def test_from_matrix_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"^m must be a 2-D \(n_out, n_in\) matrix, got shape \(4,\)$"):
        XorDecoderParams.from_matrix([1, 2, 4, 7], max_patches=1)
    with pytest.raises(ValueError, match=r"^n_out must be greater than n_in=4, got 3$"):
        XorDecoderParams.from_matrix(np.eye(3, 4, dtype=np.uint8), max_patches=1)
    with pytest.raises(ValueError, match=r"^max_patches must be >= 1, got 0$"):
        XorDecoderParams.from_matrix(TOY, max_patches=0)


def test_decoder_takes_only_params():
    with pytest.raises(TypeError, match=r"^params must be an XorDecoderParams, got dict$"):
        XorDecoder({"n_in": 3, "n_out": 4, "max_patches": 1, "m": TOY})


def test_matrix_forms_agree_and_hash():
    as_list = params()
    as_array = params(m=np.array(TOY, dtype=np.uint8))
    as_bool = params(m=np.array(TOY, dtype=bool))
    as_masks = params(m=(0b001, 0b010, 0b100, 0b111))
    assert as_list == as_array == as_bool == as_masks
    assert len({as_list, as_array, as_bool, as_masks}) == 1
    assert as_list.m == (1, 2, 4, 7)
    assert np.array_equal(as_list.matrix, np.array(TOY, dtype=np.uint8))
    assert as_list.describe()["m"] == ["1", "2", "4", "7"]


@pytest.mark.parametrize("n_out, width", [(4, 2), (5, 3), (128, 7), (200, 8), (512, 9), (513, 10)])
def test_position_width_is_ceil_log2(n_out, width):
    m = [1 << (j % 3) if j < 3 else (j % 7) or 1 for j in range(n_out)]
    assert params(n_out=n_out, m=m).position_width == width


def test_pipeline_depth_follows_widest_row():
    # The toy's widest row has 3 inputs + its patch bit: one stage of 16-input XORs, or two of 2-input.
    assert params().tree_stages == 1 and params().latency == 3
    assert params(xor_fanin=2).tree_stages == 2
    assert params(xor_fanin=4).tree_stages == 1
    # A 16-input row plus its patch bit needs two 16-input stages.
    wide = XorDecoderParams(n_in=16, n_out=17, max_patches=1, m=[1 << i for i in range(16)] + [0xFFFF])
    assert wide.tree_stages == 2 and wide.latency == 4
