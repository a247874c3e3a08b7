"""The frame layer in RTL (the byte-stream `Accelerator`) against the golden link model, under cocotb."""

from __future__ import annotations

import pytest

from hw.config import AcceleratorConfig
from hw.top import Accelerator
from sim import runner


@pytest.mark.parametrize("max_payload, frames", [(64, 60), (300, 25)])
def test_frame_layer_matches_golden_model(max_payload, frames):
    # A short timeout (0.01 ms = 250 cycles at 25 MHz) keeps the truncated-frame tests quick.
    config = AcceleratorConfig(max_payload=max_payload, frame_timeout_ms=0.01)
    sim = runner.build(Accelerator(config), "accelerator")
    runner.run(sim, "sim.tb.link", {
        "max_payload": max_payload,
        "timeout_cycles": config.frame_timeout_cycles,
        "info": config.info_json().hex(),
        "frames": frames,
    })
