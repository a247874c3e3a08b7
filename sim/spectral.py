"""Run layers through the `SpectralConv` RTL simulation: the streams `hw.spectral.streams.encode` makes, the outputs
`spectral_conv_fixed` expects, the generic stream testbench. Shared by the tests and `python -m sim.bench spectral`."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hw.spec.spectral.fixed import spectral_conv_fixed
from hw.spec.spectral.layer import SpectralLayer
from hw.spectral.pipeline import SpectralConv, SpectralConvParams, cycle_model
from hw.spectral.streams import Window, encode, post_output
from sim import runner


def simulate_layers(params: SpectralConvParams, layers: Sequence[tuple[SpectralLayer, np.ndarray] |
                                                                  tuple[SpectralLayer, np.ndarray, Window]], name: str,
                    workdir: Path, *, testcase: str | None = None, gap_probability: float = 0.3,
                    ready_probability: float = 0.6, simulator: str | None = None) -> dict[str, list[int]]:
    """Stream the layers (each with its input and, on an engine with post stages, optionally its post `Window`)
    back to back through the RTL; raise `runner.SimulationFailed`
    unless every output equals the golden model's; return the full-rate run's handshake cycles per port
    (only when `testcase` is None or "full_rate"). A whole layer runs long: Verilator unless $SQGEN_SIM or
    `simulator` says otherwise."""
    inputs: dict[str, list[int]] = {"cfg": [], "x": [], "w": [], "quant": [], **({"post": []} if params.post else {})}
    expected: list[int] = []
    compute = 0
    mask = (1 << params.spec.out_bits) - 1
    for layer, x_q, *post in layers:
        window = post[0] if post else None
        for port, beats in encode(params, layer, x_q, window).items():
            inputs[port] += beats
        out = post_output(spectral_conv_fixed(x_q, layer, params.spec), window)
        expected += [int(v) & mask for v in out.reshape(-1)]
        compute += cycle_model(params, layer, *np.shape(x_q)[1:], pool=bool(window and window[4]))["single"]
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / f"{name}-cycles.json"
    data = workdir / f"{name}.json"
    data.write_text(json.dumps({
        "inputs": {port: [f"{b:x}" for b in beats] for port, beats in inputs.items()},
        "expected": [f"{b:x}" for b in expected], "compute_cycles": compute,
        "gap_probability": gap_probability, "ready_probability": ready_probability, "report": str(report)}))
    sim = runner.build(lambda: SpectralConv(params), name, simulator=simulator or runner.choose(runner.WHOLE),
                       key=pickle.dumps(params))
    runner.run(sim, "sim.tb.streams", {"data": str(data)}, testcase=testcase)
    return json.loads(report.read_text()) if testcase in (None, "full_rate") else {}


def span(cycles: dict[str, list[int]]) -> int:
    """Cycles from the first input handshake to the last output handshake of a full-rate run."""
    first = min(c[0] for port, c in cycles.items() if port != "o" and c)
    return cycles["o"][-1] - first + 1
