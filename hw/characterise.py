"""Resources and Fmax of one block alone on a board: `python -m hw.characterise --board icebreaker [--block bim]`.

SPEC2 blocks (`--block fft2d`, `ifft2d`, `mac`, `oaa`, `baseline`) go through `characterise_spectral`: a multi-stream
`StreamHarness`, out dir `build/characterise/<board>-<block>/`; the report adds DSPs, BRAMs, the RTL's `$mul`
count, whether multipliers landed on DSPs, and records a design that does not fit (nextpnr's error line) or
a block whose alone synthesis is unavailable (Fft2d with DSP twiddles: yosys's abc9 asserts) instead of
failing.

The block (`--block xor`, the default: the XOR-gate weight decoder; `--block bim`: the BIM mask unpacker)
is placed in a harness (`hw.harness.StreamHarness`), a top that keeps all of it alive with a handful of pins, and
built with the same toolchain stages, tools and nextpnr options as `hw.build`. The out dir (default
`build/characterise/<board>-xor<n_in>x<n_out>p<max_patches>/` or `<board>-bim<m_t>x<n_t>r<r>/`) gets the
bitstream, the tool logs and `characterisation.json`: resources, Fmax, and the block's rate at Fmax
(decoded weights per second, n_out × Fmax; mask bits per second, n_t × Fmax).

Every block goes through one flow: `hw.build.build` with the harness as its design, then the block synthesised
alone for its own cell counts. The clock constraint stays the board's:
raising it did not move nextpnr's result for this block (measured at 80/100 MHz on iCE40, 200/250 MHz on ECP5).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth.lib import wiring

from boards import BOARDS, DEFAULT_BOARD, Board, get_board

from .bim_unpacker import BimUnpacker, BimUnpackerParams
from .build import DESIGN_NAME, TimingError, build
from .config import AcceleratorConfig
from .harness import (
    SPECTRAL_BLOCKS,
    BimUnpackerHarness,
    SpectralBlock,
    StreamHarness,
    XorDecoderHarness,
    random_full_rank_matrix,
    spectral_block,
    spectral_harness,
)
from .toolchain import (
    ABC_LUT_MAPPING,
    BuildError,
    find_tool,
    nextpnr_error,
    print_progress,
    rtlil_multipliers,
    run_stage,
    synth_script,
    yosys_cell_counts,
    yosys_dsp_cells,
)
from .xor_decoder import XorDecoder, XorDecoderParams

RESULT_FILE = "characterisation.json"
DSP_CELLS = {"ecp5": "MULT18X18D", "ice40": "ICESTORM_DSP"}  #: nextpnr's DSP resource (yosys: SB_MAC16)
BRAM_CELLS = {"ecp5": ("DP16KD",), "ice40": ("ICESTORM_RAM", "ICESTORM_SPRAM")}


@dataclass(frozen=True)
class _Subject:
    """What one characterisation builds: a harness around the block, and the block again to synthesise alone."""

    name: str  #: the block's module name: the report's "block" and the top of its alone synthesis
    stem: str  #: the alone synthesis's files: <stem>.il, <stem>.rpt, yosys-<stem>.log
    harness: StreamHarness
    make: Callable[[], wiring.Component]  #: a fresh instance of the block
    lut_mapper: str = "abc9"


@dataclass(frozen=True)
class _Measured:
    """What the shared flow measured: hw.build's report, the harness's cells, the block's cells alone."""

    built: dict[str, Any]
    harness_cells: dict[str, int]
    alone_cells: dict[str, int] | None
    alone_synthesis: str  #: "ok", or "unavailable (why)"


def synthesise_alone(block: wiring.Component, name: str, stem: str, family: str, out_dir: Path,
                     lut_mapper: str = "abc9") -> str:
    """`block` by itself (module `name`, no harness) through `family`'s yosys synthesis in `out_dir`: its RTLIL
    in <stem>.il, the report's text returned (`yosys_cell_counts` and `yosys_dsp_cells` read it)."""
    from amaranth.back import rtlil

    yosys = find_tool("yosys")
    (out_dir / f"{stem}.il").write_text(rtlil.convert(block, name=name))
    script = f"read_rtlil {stem}.il; {synth_script(family, name, lut_mapper)}"
    run_stage([yosys, "-q", "-l", f"{stem}.rpt", "-p", script], out_dir / f"yosys-{stem}.log")
    return (out_dir / f"{stem}.rpt").read_text()


def _synthesise_alone(subject: _Subject, board: Board, out_dir: Path) -> dict[str, int]:
    """LUT4s and flip-flops of the block by itself, after the family's yosys synthesis (no harness)."""
    report = synthesise_alone(subject.make(), subject.name, subject.stem, board.family, out_dir, subject.lut_mapper)
    return yosys_cell_counts(report, subject.name)


def _measure(subject: _Subject, board: Board, out_dir: Path, *, seed: int, progress: Callable[[str], None],
             skip_alone: str | None = None, record_alone_failure: bool = False) -> _Measured:
    """The flow every characterisation shares: build the harness for `board` into `out_dir` (a block slower than
    the board clock is still characterised), count the harness's cells, then synthesise the block alone.

    A failing build raises BuildError. `skip_alone` says why the block is not synthesised alone; with
    `record_alone_failure` a failing alone synthesis is recorded instead of raised.
    """
    try:
        built = build(AcceleratorConfig(board=board.name), out_dir, seed=seed, progress=progress,
                      design=subject.harness, lut_mapper=subject.lut_mapper).report
    except TimingError as error:
        built = error.result.report
    harness_cells = yosys_cell_counts((out_dir / f"{DESIGN_NAME}.rpt").read_text(), DESIGN_NAME)
    if skip_alone:
        return _Measured(built, harness_cells, None, f"unavailable ({skip_alone})")
    progress(f"[+] synthesis of the {subject.name.replace('_', ' ')} alone (yosys) ...")
    try:
        return _Measured(built, harness_cells, _synthesise_alone(subject, board, out_dir), "ok")
    except BuildError as error:
        if not record_alone_failure:
            raise
        log = "".join(path.read_text(errors="replace") for path in
                      (out_dir / f"yosys-{subject.stem}.log", out_dir / f"{subject.stem}.rpt") if path.is_file())
        why = "yosys abc9 assert" if "abc" in log.lower() and "assert" in log.lower() else str(error).splitlines()[0]
        return _Measured(built, harness_cells, None, f"unavailable ({why})")


def _head(name: str, board: Board, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    return {"block": name, "board": board.name, "device": board.device, "package": board.package, "seed": seed,
            "params": params}


def _timing(built: dict[str, Any]) -> dict[str, Any]:
    return {
        "fmax_mhz": min(built["fmax_mhz"].values()),
        "constraint_mhz": min(built["constraint_mhz"].values()),
        "board_clock_mhz": built["target_mhz"],
        "meets_board_clock": built["timing_met"],
    }


def _out_dir(out_dir: Path | None, name: str) -> Path:
    """The resolved out dir (default `build/characterise/<name>/`), without an earlier run's report."""
    out_dir = Path(out_dir if out_dir is not None else Path("build") / "characterise" / name).resolve()
    (out_dir / RESULT_FILE).unlink(missing_ok=True)
    return out_dir


def _write(out_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _characterise_stream_block(subject: _Subject, board: Board, out_dir: Path, head: dict[str, Any],
                               rate_key: str, bits_per_cycle: int, *, seed: int,
                               progress: Callable[[str], None]) -> dict[str, Any]:
    """The XOR decoder's or BIM unpacker's report: `head`, resources, cells, timing, and `rate_key`, the bits
    it delivers per second at Fmax (`bits_per_cycle` each cycle at full rate)."""
    measured = _measure(subject, board, out_dir, seed=seed, progress=progress)
    built, timing = measured.built, _timing(measured.built)
    return _write(out_dir, {
        **head,
        "resources": built["resources"],
        # From yosys's statistics: the whole harness, and the block synthesised by itself.
        "harness_cells": measured.harness_cells,
        f"{subject.stem}_cells": measured.alone_cells,
        **timing,
        rate_key: round(bits_per_cycle * timing["fmax_mhz"] * 1e6),
        "build_seconds": built["build_seconds"],
        "tools": built["tools"],
    })


def characterise(params: XorDecoderParams | BimUnpackerParams, board_name: str, out_dir: Path | None = None, *,
                 seed: int = 1, progress: Callable[[str], None] = print_progress) -> dict[str, Any]:
    """Build the block's harness for a board; return (and write) the characterisation report.

    `XorDecoderParams` characterise the XOR decoder; `BimUnpackerParams` the BIM unpacker (`characterise_bim`).
    """
    if isinstance(params, BimUnpackerParams):
        return characterise_bim(params, board_name, out_dir, seed=seed, progress=progress)
    board = get_board(board_name)
    subject = _Subject("xor_decoder", "decoder", XorDecoderHarness(params, board.uart_resource),
                       lambda: XorDecoder(params))
    head = {**_head(subject.name, board, seed, {key: value for key, value in params.describe().items() if key != "m"}),
            "m_ones": sum(row.bit_count() for row in params.m), "latency_cycles": params.latency}
    out_dir = _out_dir(out_dir, f"{board.name}-xor{params.n_in}x{params.n_out}p{params.max_patches}")
    # One slice (n_out weight bits of one bit-plane) per cycle at full rate.
    return _characterise_stream_block(subject, board, out_dir, head, "weights_per_s", params.n_out, seed=seed,
                                      progress=progress)


def characterise_bim(params: BimUnpackerParams, board_name: str, out_dir: Path | None = None, *, seed: int = 1,
                     progress: Callable[[str], None] = print_progress) -> dict[str, Any]:
    """Build `BimUnpackerHarness(params)` for a board; return (and write) the characterisation report."""
    board = get_board(board_name)
    subject = _Subject("bim_unpacker", "unpacker", BimUnpackerHarness(params, board.uart_resource),
                       lambda: BimUnpacker(params))
    head = {**_head(subject.name, board, seed, params.describe()), "latency_cycles": params.latency}
    out_dir = _out_dir(out_dir, f"{board.name}-bim{params.m_t}x{params.n_t}r{params.r}")
    # One mask row (n_t bits) per cycle at full rate, across tiles when m_t >= r.
    return _characterise_stream_block(subject, board, out_dir, head, "mask_bits_per_s", params.n_t, seed=seed,
                                      progress=progress)


def characterise_spectral(block: SpectralBlock | str, board_name: str, out_dir: Path | None = None, *, seed: int = 1,
                       alone: bool = True, progress: Callable[[str], None] = print_progress) -> dict[str, Any]:
    """Build a SPEC2 block's multi-stream harness for a board; return (and write) the characterisation report.

    Unlike `characterise`, a design that does not fit the device is reported, not raised: `fits` False and
    `error` the nextpnr (or yosys) error line. The block alone is synthesised unless `alone` is False or
    `block.alone_unavailable` says why not; a failed alone synthesis is recorded, not raised.
    """
    if isinstance(block, str):
        block = spectral_block(block)
    board = get_board(board_name)
    out_dir = _out_dir(out_dir, f"{board.name}-{block.key}")
    # The classic abc mapping exists to work around abc9 on the families that need it; elsewhere abc9 maps.
    mapper = block.lut_mapper if board.family in ABC_LUT_MAPPING else "abc9"
    report = {**_head(block.name, board, seed, block.params), "lut_mapper": mapper}
    subject = _Subject(block.name, block.key, spectral_harness(block, board.uart_resource), block.make, mapper)
    try:
        measured = _measure(subject, board, out_dir, seed=seed, progress=progress, record_alone_failure=True,
                            skip_alone=block.alone_unavailable or (None if alone else "not run"))
    except BuildError as error:
        log = out_dir / f"nextpnr-{board.family}.log"
        stage_failed = "place & route" in str(error).splitlines()[0] and log.is_file()
        line = nextpnr_error(log.read_text(errors="replace")) if stage_failed else str(error).splitlines()[0]
        report.update({"fits": False, "error": f"does not fit: {line}" if stage_failed else line})
        rpt = out_dir / f"{DESIGN_NAME}.rpt"
        if stage_failed and rpt.is_file():  # synthesis finished: what it asked of the device
            text = rpt.read_text(errors="replace")
            report["harness_cells"] = yosys_cell_counts(text, DESIGN_NAME)
            report["yosys_dsp_cells"] = yosys_dsp_cells(text, DESIGN_NAME)
        return _write(out_dir, report)
    built = measured.built
    resources = built["resources"]
    dsp = resources.get(DSP_CELLS[board.family], {}).get("used", 0)
    return _write(out_dir, {
        **report,
        "fits": True,
        "resources": resources,
        "harness_cells": measured.harness_cells,
        "dsp": dsp,
        "bram": sum(resources.get(name, {}).get("used", 0) for name in BRAM_CELLS[board.family]),
        # `$mul` cells in the RTL (constant ones included: yosys may fold those into logic) and whether any
        # multiplier ended up in DSP blocks.
        "rtl_multipliers": rtlil_multipliers((out_dir / f"{DESIGN_NAME}.il").read_text()),
        "multipliers_on_dsps": dsp > 0,
        **_timing(built),
        "build_seconds": built["build_seconds"],
        "tools": built["tools"],
        "alone_cells": measured.alone_cells,
        "alone_synthesis": measured.alone_synthesis,
    })


def format_spectral_characterisation(report: dict[str, Any]) -> str:
    """A SPEC2 characterisation report as the CLI prints it: resources, cells, multipliers, Fmax."""
    title = f"{report['block']} {report['params']} on {report['board']} ({report['device']})"
    if not report["fits"]:
        lines = [title, f"  {report['error']}"]
        if "harness_cells" in report:
            cells = report["harness_cells"]
            lines.append(f"  {'harness (yosys)':<16}{cells['luts']:>8} LUT4 {cells['ffs']:>6} FF "
                         f"{report['yosys_dsp_cells']:>4} DSP")
        return "\n".join(lines)
    lines = [title]
    for name, use in report["resources"].items():
        lines.append(f"  {name:<16}{use['used']:>8} / {use['available']}")
    cells = report["harness_cells"]
    lines.append(f"  {'harness (yosys)':<16}{cells['luts']:>8} LUT4 {cells['ffs']:>6} FF")
    if report["alone_cells"]:
        cells = report["alone_cells"]
        lines.append(f"  {'block (yosys)':<16}{cells['luts']:>8} LUT4 {cells['ffs']:>6} FF")
    lines.append(f"  alone synthesis: {report['alone_synthesis']}")
    lines.append(f"  multipliers: {report['rtl_multipliers']} in the RTL, {report['dsp']} DSPs used "
                 f"({'mapped to DSPs' if report['multipliers_on_dsps'] else 'none on DSPs'})")
    lines.append(f"  Fmax {report['fmax_mhz']:.2f} MHz (constraint {report['constraint_mhz']:.2f} MHz, "
                 f"board clock {report['board_clock_mhz']:.2f} MHz)")
    return "\n".join(lines)


def format_characterisation(report: dict[str, Any]) -> str:
    """An XOR decoder's or BIM unpacker's characterisation report as the CLI prints it."""
    p = report["params"]
    if report["block"] == "bim_unpacker":
        title = f"bim_unpacker m_t={p['m_t']} n_t={p['n_t']} r={p['r']}"
        block, rate = "unpacker", f"{report['mask_bits_per_s'] / 1e9:.2f} G mask bits/s (n_t x Fmax)"
    else:
        title = f"xor_decoder n_in={p['n_in']} n_out={p['n_out']} max_patches={p['max_patches']}"
        block, rate = "decoder", f"{report['weights_per_s'] / 1e9:.2f} G weights/s (n_out x Fmax)"
    lines = [f"{title} on {report['board']} ({report['device']}), latency {report['latency_cycles']} cycles"]
    for name, use in report["resources"].items():
        lines.append(f"  {name:<16}{use['used']:>8} / {use['available']}")
    for what in ("harness", block):
        cells = report[f"{what}_cells"]
        lines.append(f"  {what + ' (yosys)':<16}{cells['luts']:>8} LUT4 {cells['ffs']:>6} FF")
    lines.append(f"  Fmax {report['fmax_mhz']:.2f} MHz (constraint {report['constraint_mhz']:.2f} MHz, "
                 f"board clock {report['board_clock_mhz']:.2f} MHz)")
    lines.append(f"  {rate}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.characterise",
                                     description="Resources and Fmax of one block alone on a board.")
    parser.add_argument("--board", default=DEFAULT_BOARD, help=f"{', '.join(BOARDS)} (default: %(default)s)")
    parser.add_argument("--block", choices=("xor", "bim", *SPECTRAL_BLOCKS), default="xor",
                        help="xor: the XOR-gate weight decoder; bim: the BIM mask unpacker; fft2d: SPEC2's forward "
                             "2-D FFT (N=8, SpectralFixed widths); ifft2d: its inverse; mac: the spectral MAC; oaa: "
                             "overlap-add and requantize; baseline: the dense M-multiplier conv (LeNet conv2 layer) "
                             "(default: %(default)s)")
    xor = parser.add_argument_group("--block xor")
    xor.add_argument("--n-in", type=int, default=24)
    xor.add_argument("--n-out", type=int, default=200)
    xor.add_argument("--max-patches", type=int, default=2)
    xor.add_argument("--matrix-seed", type=int, default=1, help="seed of the random full-rank M")
    bim = parser.add_argument_group("--block bim")
    bim.add_argument("--m-t", type=int, default=64, help="tile rows (default: %(default)s)")
    bim.add_argument("--n-t", type=int, default=64, help="tile columns: mask bits per row (default: %(default)s)")
    bim.add_argument("--rank", type=int, default=8, help="rank r (default: %(default)s)")
    spectral = parser.add_argument_group("--block fft2d / mac / oaa / baseline")
    spectral.add_argument("--mac-p", type=int, default=4, help="MAC lanes P (default: %(default)s)")
    spectral.add_argument("--mac-b", type=int, default=8, help="MAC spectrum banks B (default: %(default)s)")
    spectral.add_argument("--oaa-max", type=int, default=28, help="largest OaA map side (default: %(default)s)")
    spectral.add_argument("--baseline-m", type=int, default=16, help="baseline multipliers M (default: %(default)s)")
    spectral.add_argument("--no-alone", action="store_true", help="skip synthesising the block alone")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    try:
        get_board(args.board)
        if args.block in SPECTRAL_BLOCKS:
            block = spectral_block(args.block, mac_p=args.mac_p, mac_b=args.mac_b, oaa_max=args.oaa_max,
                                baseline_m=args.baseline_m)
        elif args.block == "bim":
            params = BimUnpackerParams(args.m_t, args.n_t, args.rank)
        else:
            m = random_full_rank_matrix(args.n_out, args.n_in, args.matrix_seed) if args.n_out > args.n_in else None
            params = XorDecoderParams(args.n_in, args.n_out, args.max_patches, m if m is not None else ())
    except (KeyError, ValueError) as error:
        parser.error(str(error))
    try:
        if args.block in SPECTRAL_BLOCKS:
            text = format_spectral_characterisation(
                characterise_spectral(block, args.board, args.out, seed=args.seed, alone=not args.no_alone))
        else:
            text = format_characterisation(characterise(params, args.board, args.out, seed=args.seed))
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
