"""A RUN whose layer stops making progress is aborted by the device's watchdog, and the device serves on.

A tiny device with both engines (the conv engine of `test_accel_rtl.TINY`, the FC engine of
`test_accel_fc_rtl.TINY_FC`) and the least watchdog its config allows runs two conv layers and an FC layer
bit-exact with the golden models, through `host.device.Device` over the simulated board (Icarus, the link
stuttering). Descriptors whose counts disagree with their cfg (x_count short or long, an FC layer's xor or
scale count) are each answered STALLED naming the layer and what it waited for, within the watchdog's time;
the device then answers ECHO, and the good program, loaded again, infers bit-exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_accel_fc_rtl import TINY_FC, TINY_FORMAT, random_fc
from test_accel_rtl import TINY, golden, tiny_layers

from host.accel import AccelInfo, load_packed, pack_program, run_packed
from host.device import Device, DeviceError
from hw.config import AcceleratorConfig
from hw.spec.fc import fc_fixed
from hw.spec.fields import unpack_fields
from hw.spec.protocol import Status, Waiting
from sim import runner
from sim.board import simulate

_BOTH = AcceleratorConfig(conv=TINY.conv, fc=TINY_FC.fc, act_depth=128, program_depth=4, conv_w_depth=64,
                          conv_quant_depth=8, fc_xor_depth=128, fc_bim_depth=128, fc_scale_depth=24,
                          max_payload=128)
#: The least watchdog the config accepts: the good layers below must never trip it.
BOTH = dataclasses.replace(_BOTH, watchdog_cycles=2 * _BOTH.longest_quiet_cycles)


def test_watchdog_setting_is_checked_and_published():
    assert BOTH.watchdog_cycles == 2 * 855 and AcceleratorConfig.lenet5().longest_quiet_cycles == 4511
    with pytest.raises(ValueError, match=r"^watchdog_cycles must be in 1710\.\.4294967295 \(at least twice "):
        dataclasses.replace(BOTH, watchdog_cycles=1709)
    with pytest.raises(ValueError, match="watchdog_cycles must be an integer"):
        dataclasses.replace(BOTH, watchdog_cycles=2e6)
    info = BOTH.describe()
    assert (info["watchdog_cycles"], info["frame_timeout_ms"]) == (1710, 100.0)
    assert AcceleratorConfig(frame_timeout_ms=20).describe()["frame_timeout_ms"] == 20


@pytest.mark.cost(seconds=30)
def test_stalled_layers_are_aborted_and_the_device_serves_on():
    rng = np.random.default_rng(11)
    convs = tiny_layers()
    fc, planes, mask = random_fc(TINY_FORMAT, 5, 8, 2, False, rng)
    xs = [rng.integers(-128, 128, size=(2, 8, 8)) for _ in range(2)]

    def expected(x: np.ndarray) -> np.ndarray:
        return fc_fixed(golden(convs, x).reshape(-1), planes, mask, fc.a, fc.bias_q, fc.shift, fc.relu)

    accel = AccelInfo.from_info(BOTH.describe())
    packed = pack_program(accel, [("conv1", convs[0][0], True), ("conv2", convs[1][0], False), ("fc", fc, False)],
                          (2, 8, 8))
    program = accel.regions["program"]
    fields = [unpack_fields(accel.descriptor, word) for word in packed.program]

    def put(index: int, word: int) -> None:
        dev.load(program.id, index, accel.region_bytes("program", [word]))

    with simulate(BOTH, simulator=runner.choose(runner.TESTBENCH), stress=3) as board:
        dev = Device(board.transport, timeout=120)
        assert dev.info() == BOTH.describe()
        load_packed(dev, packed)
        out, good_cycles = run_packed(dev, packed, xs[0])
        assert np.array_equal(out, expected(xs[0]))

        # (layer, field, change, the RUN's first layer, what it waits for: exactly, or at least (None, flag)). The
        # RUN starts at the bad layer, but for one that comes third in it (the simulation is slow).
        bad = [(0, "x_count", -1, 0, (None, Waiting.OUTPUT)), (1, "x_count", +1, 1, Waiting.X),
               (2, "fc.xor_count", -1, 0, (None, Waiting.OUTPUT)), (2, "fc.scale_count", +1, 2, Waiting.FC_SCALE)]
        for layer, name, change, first, waiting in bad:
            put(layer, accel.pack_descriptor({**fields[layer], name: fields[layer][name] + change}))
            with pytest.raises(DeviceError) as caught:
                dev.run(first, len(packed.program) - first)
            stall = caught.value.stall
            assert caught.value.status == Status.STALLED and stall.layer == layer, f"{name}: {caught.value}"
            assert str(caught.value).startswith(f"device answered STALLED to RUN: layer {layer} made no progress")
            if isinstance(waiting, tuple):
                assert waiting[1] in stall.waiting, f"{name}: {stall}"
            else:
                assert stall.waiting == waiting, f"{name}: {stall}"
            assert BOTH.watchdog_cycles <= stall.cycles <= good_cycles + BOTH.watchdog_cycles + 50, f"{name}: {stall}"
            assert dev.echo(b"alive") == b"alive"
            put(layer, packed.program[layer])

        out, cycles = run_packed(dev, packed, xs[1])
        assert np.array_equal(out, expected(xs[1])) and cycles == good_cycles
