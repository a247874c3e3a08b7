"""`python -m sim.bench spectral` without builds or simulations: its arithmetic, from the definitions."""

from __future__ import annotations

import json

import pytest

from sim.bench import __main__ as bench
from sim.bench.spectral import LAYERS, bench_spec2


def test_spatial_operations_from_the_definition():
    ops = {spec.name: spec.ops for spec in LAYERS}
    assert ops["vgg"] == 2 * 56 * 56 * 3 * 3 * 64 * 64
    assert ops["lenet_conv1"] == 2 * 28 * 28 * 5 * 5 * 1 * 6  # "same": 28 x 28 out
    assert ops["lenet_conv2"] == 2 * 10 * 10 * 5 * 5 * 6 * 16  # "valid": 10 x 10 out


def test_rates_and_ratio_are_consistent():
    result = bench_spec2(4, 8, 0.75, 0, "ulx3s-85f", build=False, simulate=False, layers=["vgg"])
    (row,) = result["layers"]
    assert 0.2 < row["spectral_density"] <= 0.25 + 1e-9 and 0.5 < row["lane_utilization"] <= 1
    model = row["cycles_model"]
    assert model["steady"] == max(model["load"], model["compute"]) < model["single"]
    dsp = result["hardware"]["spec2"]["dsp"]
    for measure in ("single", "steady"):
        s2 = row["spec2"][measure]
        assert s2["cycles"] == model[measure]
        assert s2["ops_per_dsp_per_cycle"] == pytest.approx(row["ops"] / model[measure] / dsp, rel=1e-3)
        assert row["ratio"][measure] == pytest.approx(
            s2["ops_per_dsp_per_cycle"] / row["baseline"]["ops_per_dsp_per_cycle"], rel=1e-2)
    # The baseline engine gives one output per ceil(C_in K^2 / M) cycles.
    assert row["baseline"]["cycles"] == 64 * 56 * 56 * -(-64 * 9 // 16)
    (target,) = result["targets"]
    assert (target["layer"], target["ratio"], target["reached"]) == ("vgg", 8.0, row["ratio"]["steady"])
    assert target["met"] == (row["ratio"]["steady"] >= 8.0)


def test_cli_rejects_unknown_layers_and_bad_lanes(capsys):
    with pytest.raises(SystemExit):
        bench.main(["spec2", "--no-build", "--no-sim", "--layers", "resnet"])
    assert "--layers must name some of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["spec2", "--no-build", "--no-sim", "--p", "4", "--b", "6"])
    assert "--b a power of two" in capsys.readouterr().err


def test_cli_prints_json(capsys):
    assert bench.main(["spec2", "--no-build", "--no-sim", "--layers", "lenet_conv2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["layer"] for row in result["layers"]] == ["lenet_conv2"]
    assert [(t["layer"], t["ratio"], t["measure"]) for t in result["targets"]] == [("lenet_conv2", 1.5, "steady")]


def test_whole_layer_figures_replace_the_stages(monkeypatch):
    """With --whole-layer the SpectralConv DSPs and Fmax are the one-layer build's, not the stages' sum and minimum."""
    from sim.bench import spectral as module

    built = []

    def fake(key, board, **kwargs):
        built.append(key)
        fmax = {"conv": 40.0, "baseline": 60.0}.get(key, 50.0 + len(built))
        return {"dsp": 18 if key in ("conv", "baseline") else 4, "fmax_mhz": fmax, "params": {},
                "resources": {"TRELLIS_COMB": 1000}}

    monkeypatch.setattr(module, "_characterised", fake)
    whole = module.hardware(4, 8, "ulx3s-85f", build=True, whole_layer=True)
    assert built == ["conv", "baseline"]
    assert (whole["spec2"]["dsp"], whole["spec2"]["fmax_mhz"]) == (18, 40.0)
    built.clear()
    stages = module.hardware(4, 8, "ulx3s-85f", build=True)
    assert built[-1] == "baseline" and "conv" not in built
    assert stages["spec2"]["dsp"] == 4 * len(module.SPEC2_STAGES)
    assert stages["spec2"]["fmax_mhz"] == min(50.0 + i for i in range(1, len(module.SPEC2_STAGES) + 1))
    row = module.bench_layer(module.LAYERS[-1], 4, 8, 0.75, 0, whole, simulate=False, workdir=None)
    assert row["spec2"]["single"]["gops"] == pytest.approx(row["spec2"]["single"]["ops_per_cycle"] * 40.0 / 1e3,
                                                          rel=1e-3)


def test_outs_divide_what_the_inverse_fft_bounds():
    """LeNet conv2 (3 to 15 groups a channel and tile against the inverse FFT's 64 cycles) computes about `outs`
    times faster with `outs` paths, each path adding its requantizer's 2 DSPs; conv1 (6 channels) gets at most 6."""
    one, two = (bench_spec2(4, 8, 0.75, 0, "ulx3s-85f", build=False, simulate=False,
                            layers=["lenet_conv1", "lenet_conv2"], outs=outs) for outs in (1, 2))
    assert two["hardware"]["spec2"]["dsp"] == one["hardware"]["spec2"]["dsp"] + 2
    conv2 = [result["layers"][1]["cycles_model"]["compute"] for result in (one, two)]
    assert 1.8 < conv2[0] / conv2[1] <= 2
    assert bench_spec2(4, 8, 0.75, 0, "ulx3s-85f", build=False, simulate=False, layers=["lenet_conv1"],
                       outs=16)["layers"][0]["outs"] == 6


def test_cli_rejects_bad_outs(capsys):
    with pytest.raises(SystemExit):
        bench.main(["spec2", "--no-build", "--no-sim", "--outs", "0"])
    assert "--outs must be in 1..16, got 0" in capsys.readouterr().err
