"""README.md's measured figures are rendered from the benchmark JSON in docs/figures/ (`python -m sim.bench readme`)."""

from __future__ import annotations

import copy

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
    assert "77.8 MHz (25 MHz)" in rendered


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
