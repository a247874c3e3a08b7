"""The board registry, each board's platform, and AcceleratorConfig's validation."""

import pytest

from boards import BOARDS, DEFAULT_BOARD, UnknownBoardError, get_board
from hw.config import MIN_CYCLES_PER_BIT, AcceleratorConfig
from hw.spec.protocol import LEN_FIELD_MAX


def test_registry_lookup():
    assert set(BOARDS) == {"icebreaker", "ulx3s-85f"}
    assert DEFAULT_BOARD in BOARDS
    for name, board in BOARDS.items():
        assert get_board(name) is board
        assert board.name == name
    assert (get_board("icebreaker").family, get_board("icebreaker").device) == ("ice40", "iCE40UP5K")
    assert (get_board("ulx3s-85f").family, get_board("ulx3s-85f").device) == ("ecp5", "LFE5U-85F")


def test_unknown_board_lists_known_ones():
    with pytest.raises(UnknownBoardError) as info:
        get_board("arty-a7")
    message = str(info.value)
    assert "'arty-a7'" in message
    assert all(name in message for name in BOARDS)
    assert isinstance(info.value, KeyError)  # callers catching KeyError keep working


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_platform_matches_board(name):
    board = get_board(name)
    platform = board.make_platform()
    assert (platform.device, platform.package) == (board.device, board.package)
    assert platform.default_clk == board.clock_resource
    assert platform.default_clk_frequency == board.clock_hz
    assert platform.lookup(*board.uart_resource).name == board.uart_resource[0]
    # Building needs synthesis, the family's place and route, and a packer; never a programmer.
    assert "openFPGALoader" not in platform.required_tools
    assert platform.required_tools[:2] == ["yosys", f"nextpnr-{board.family}"]
    assert board.budget and all(amount > 0 for amount in board.budget.values())


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_config_baud_limits(name):
    top_baud = get_board(name).clock_hz // MIN_CYCLES_PER_BIT
    assert AcceleratorConfig(board=name, baud=top_baud).uart_divisor >= MIN_CYCLES_PER_BIT
    assert AcceleratorConfig(board=name, baud=1200).baud == 1200
    for baud in (0, 1199, top_baud + 1):
        with pytest.raises(ValueError, match=r"^baud must be"):
            AcceleratorConfig(board=name, baud=baud)


def test_config_max_payload_limits():
    assert AcceleratorConfig(max_payload=1).max_payload == 1
    assert AcceleratorConfig(max_payload=LEN_FIELD_MAX).max_payload == LEN_FIELD_MAX
    for max_payload in (0, -1, LEN_FIELD_MAX + 1):
        with pytest.raises(ValueError, match=r"^max_payload must be"):
            AcceleratorConfig(max_payload=max_payload)


def test_config_rejects_unknown_board():
    with pytest.raises(UnknownBoardError, match="known boards"):
        AcceleratorConfig(board="nope")
