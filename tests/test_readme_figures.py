"""README.md's measured figures are rendered from the benchmark JSON in docs/figures/ (`python -m sim.bench readme`)."""

from __future__ import annotations

import copy
import json

import pytest

from sim.bench import readme


def test_readme_figures_match_their_json():
    """Every figure block of README.md is exactly what its stored measurements render (`--check`)."""
    text = readme.README.read_text()
    names = [match["name"] for match in readme.BLOCK.finditer(text)]
    assert set(names) == set(readme.BLOCKS), "each renderer has its block in README.md, once"
    assert len(names) == len(set(names))
    assert readme.render(text, readme.load()) == text, "run `python -m sim.bench readme`"


def test_every_figure_file_names_its_command():
    figures = readme.load()
    assert set(figures) == set(readme.SOURCES)
    for name, data in figures.items():
        assert data["command"] == readme.SOURCES[name].command()


def test_a_new_measurement_changes_the_readme():
    """A changed measurement shows in the rendering: the README cannot keep a stale figure and pass `--check`."""
    text = readme.README.read_text()
    figures = copy.deepcopy(readme.load())
    figures["e2e"]["result"]["cycles_per_image"] = 123_457
    figures["build-lenet5"]["report"]["fmax_mhz"] = {"clk": 77.77}
    rendered = readme.render(text, figures)
    assert rendered != text
    assert "123 457 cycles per image" in rendered
    assert f"77.8 MHz ({figures['build-lenet5']['report']['target_mhz']:g} MHz)" in rendered


def test_unknown_block_is_refused():
    with pytest.raises(ValueError, match="figures:nope: unknown"):
        readme.render("<!-- figures:nope -->\nold\n<!-- /figures -->\n", readme.load())


def test_check_fails_on_a_hand_edited_figure(tmp_path, monkeypatch, capsys):
    from sim.bench.__main__ import main

    edited = tmp_path / "README.md"
    text = readme.README.read_text()
    match = next(readme.BLOCK.finditer(text))
    edited.write_text(text[:match.start("body")] + "| hand | edited |\n" + text[match.end("body"):])
    monkeypatch.setattr(readme, "README", edited)
    assert main(["readme", "--check"]) == 1
    assert "python -m sim.bench readme" in capsys.readouterr().err
    monkeypatch.setattr(readme, "README", readme.ROOT / "README.md")
    assert main(["readme", "--check"]) == 0


def test_block_format_and_admm_measurements_change_the_readme():
    """The blocks table, the formats paragraph and the ADMM table follow their JSON like the other blocks."""
    text = readme.README.read_text()
    figures = copy.deepcopy(readme.load())
    mac = figures["spectral"]["result"]["hardware"]["spec2"]["stages"]["mac"]
    mac["fmax_mhz"], mac["resources"]["TRELLIS_COMB"] = 99.4, 7012
    fft_ice = figures["fft2d-icebreaker"]["characterisation"]
    fft_ice.update(fmax_mhz=12.3, resources={**fft_ice["resources"], "ICESTORM_LC": {"used": 5000, "available": 5280}})
    # A block that does not fit says what ran out, as nextpnr names it.
    figures["ifft2d-icebreaker"]["characterisation"] = {
        "fits": False, "error": "does not fit: ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5381 ICESTORM_LCs"}
    figures["xor"]["result"]["at_target_point"][0]["bits_per_weight"] = 0.1337
    figures["bim"]["result"]["accuracy"]["test_accuracy_mean"]["bim"] = 0.5
    admm = figures["admm"]["result"]
    admm["test_accuracy"]["dense_spatial"]["values"][0] = 0.912
    admm["target"]["gap_points"]["values"] = [-0.1, -0.2, -0.3]
    rendered = readme.render(text, figures)
    assert "| 99 MHz, 7 012 LUT4, 16 MULT18X18D |" in rendered
    assert "| SPEC2 `Fft2d`, N = 8 (shift-add twiddles) | 12 MHz, 5 000 / 5 280 LC, 0 DSP |" in rendered
    assert "| SPEC2 `Ifft2d`, N = 8 | does not fit (logic) |" in rendered
    assert "0.1337 bits/weight at n_out = 200" in rendered
    assert "retrained reach 50.00 % against" in rendered
    assert "| 91.2, " in rendered
    assert "it is above it on every seed" in rendered


def test_refresh_from_a_finished_build(tmp_path, monkeypatch, capsys):
    """`--refresh NAME --from DIR` stores the files an earlier run of NAME's command wrote, with that command's name,
    and renders them; a folder without them, or a measurement that writes none, is a one-line error."""
    from sim.bench.__main__ import main

    figures, readme_file = tmp_path / "figures", tmp_path / "README.md"
    figures.mkdir()
    for path in readme.FIGURES.glob("*.json"):
        (figures / path.name).write_text(path.read_text())
    readme_file.write_text(readme.README.read_text())
    monkeypatch.setattr(readme, "FIGURES", figures)
    monkeypatch.setattr(readme, "README", readme_file)
    build = tmp_path / "build"
    build.mkdir()
    stored = readme.load(figures)["build-lenet5"]
    stored["report"]["fmax_mhz"] = {"clk": 61.23}
    (build / "report.json").write_text(json.dumps(stored["report"]))
    assert main(["readme", "--refresh", "build-lenet5", "--from", str(build)]) == 1
    assert capsys.readouterr().err.strip().endswith(f"{build} has no manifest.json: give the --out folder of "
                                                     "`python -m hw.build`")
    (build / "manifest.json").write_text(json.dumps(stored["manifest"]))
    assert main(["readme", "--refresh", "build-lenet5", "--from", str(build)]) == 0
    saved = json.loads((figures / "build-lenet5.json").read_text())
    assert saved == {"command": "python -m hw.build", **stored}
    assert "61.2 MHz" in readme_file.read_text()
    assert main(["readme", "--refresh", "e2e", "--from", str(build)]) == 1
    assert "writes no files: refresh it without --from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["readme", "--refresh", "e2e", "build-lenet5", "--from", str(build)])
    assert "give one --refresh NAME, got 2" in capsys.readouterr().err
