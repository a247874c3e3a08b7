"""Resources and Fmax of one block alone on a board: `python -m hw.characterise --board icebreaker`.

The XOR-gate weight decoder is placed in `XorDecoderHarness`, a top that keeps all of it alive with a
handful of pins, and built with the same toolchain stages, tools and nextpnr options as `hw.build`. The
out dir (default `build/characterise/<board>-xor<n_in>x<n_out>p<max_patches>/`) gets the bitstream, the
tool logs and `characterisation.json`: resources, Fmax, and decoded weights per second (n_out × Fmax).

The build is `hw.build.build` with the harness as its design. The clock constraint stays the board's:
raising it did not move nextpnr's result for this block (measured at 80/100 MHz on iCE40, 200/250 MHz on ECP5).
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from amaranth import Cat, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer

from boards import BOARDS, DEFAULT_BOARD, Board, get_board

from . import build as hwbuild
from .config import AcceleratorConfig
from .xor_decoder import XorDecoder, XorDecoderParams

RESULT_FILE = "characterisation.json"


class XorDecoderHarness(wiring.Component):
    """`XorDecoder` between registers, fed and observed through the board's UART pins.

    Nothing of the decoder can be optimised away, and no path starts or ends at a pin:

    * Input payload: a shift register as wide as one beat, advanced on each accepted beat by one bit
      (the UART RX pin, synchronised, XORed with the register's top bit and a LFSR bit), so every payload
      bit is a register whose value depends on the pin.
    * Input `valid` and output `ready`: bits of a free-running 16-bit LFSR with the pin mixed in, so
      gaps and backpressure both occur and the stall logic is exercised; `valid` and the payload only
      change after a handshake, as the stream rules ask.
    * Output: the n_out decoded bits (already registers, the decoder's last stage) are XOR-reduced by a
      tree of registered 4-input XORs, together with the output handshake, to the UART TX pin. A parity
      of all outputs depends on every row of M, so every XOR tree stays.

    What the harness adds beside the decoder: about beat-width + 16 + n_out / 3 flip-flops and n_out / 3
    LUTs.
    """

    def __init__(self, params: XorDecoderParams, uart_resource: tuple[str, int] = ("uart", 0)):
        self.params = params
        self.uart_resource = uart_resource
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        uart = platform.request(*self.uart_resource, dir="-")
        m.submodules.rx_pin = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.tx_pin = tx_pin = io.Buffer("o", uart.tx)
        m.submodules.decoder = decoder = XorDecoder(self.params)
        pin = Signal()
        m.submodules.sync_rx = FFSynchronizer(rx_pin.i, pin)

        lfsr = Signal(16, init=1)  # x^16 + x^14 + x^13 + x^11 + 1, maximal length
        m.d.sync += lfsr.eq(Cat(lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10] ^ pin, lfsr[:15]))

        width = self.params.beat_layout.size
        source = Signal(width, init=1)
        valid = Signal()
        accepted = decoder.i.valid & decoder.i.ready
        with m.If(accepted):
            m.d.sync += source.eq(Cat(source[-1] ^ pin ^ lfsr[5], source[:-1]))
        with m.If(~valid | decoder.i.ready):
            m.d.sync += valid.eq(lfsr[0] | lfsr[3])  # offered 3 cycles in 4
        m.d.comb += [decoder.i.valid.eq(valid), decoder.i.payload.eq(source),
                     decoder.o.ready.eq(lfsr[7] | lfsr[11])]  # ready 3 cycles in 4

        level = [*decoder.o.payload, decoder.o.valid & decoder.o.ready]
        depth = 0
        while len(level) > 1:
            reduced = []
            for start in range(0, len(level), 4):
                bit = Signal(name=f"reduce{depth}_{start // 4}")
                m.d.sync += bit.eq(functools.reduce(operator.xor, level[start:start + 4]))
                reduced.append(bit)
            level, depth = reduced, depth + 1
        m.d.comb += tx_pin.o.eq(level[0])
        return m


def random_full_rank_matrix(n_out: int, n_in: int, seed: int) -> np.ndarray:
    """A Bernoulli(0.5) (n_out, n_in) 0/1 matrix of full column rank: a typical M for characterisation."""
    rng = np.random.default_rng(seed)
    while True:
        m = rng.integers(0, 2, size=(n_out, n_in), dtype=np.uint8)
        try:
            XorDecoderParams.from_matrix(m, max_patches=1)
            return m
        except ValueError:
            continue


def yosys_cell_counts(log: str, top: str) -> dict[str, int]:
    """LUT4s and flip-flops in the last `stat` of module `top` in a yosys log (CCU2C carries count as 2 LUT4s)."""
    start = log.rfind(f"=== {top} ===")
    if start < 0:
        raise hwbuild.BuildError(f"no statistics for module {top} in the yosys log")
    block = log[start:].split("=== design hierarchy ===")[0]
    cells = {name: int(count) for count, name in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", block, re.M)}
    luts = sum(n for name, n in cells.items() if name in ("SB_LUT4", "LUT4")) + 2 * cells.get("CCU2C", 0)
    ffs = sum(n for name, n in cells.items() if name.startswith("SB_DFF") or name == "TRELLIS_FF")
    return {"luts": luts, "ffs": ffs}


def _synthesise_decoder_alone(params: XorDecoderParams, board: Board, yosys: str, out_dir: Path) -> dict[str, int]:
    """LUT4s and flip-flops of the decoder by itself, after the family's yosys synthesis (no harness)."""
    from amaranth.back import rtlil

    (out_dir / "decoder.il").write_text(rtlil.convert(XorDecoder(params), name="xor_decoder"))
    script = f"read_rtlil decoder.il; synth_{board.family} -top xor_decoder"
    hwbuild._run_stage([yosys, "-q", "-l", "decoder.rpt", "-p", script], out_dir / "yosys-decoder.log")
    return yosys_cell_counts((out_dir / "decoder.rpt").read_text(), "xor_decoder")


def characterise(params: XorDecoderParams, board_name: str, out_dir: Path | None = None, *, seed: int = 1,
                 progress: Callable[[str], None] = hwbuild._stderr) -> dict[str, Any]:
    """Build `XorDecoderHarness(params)` for a board; return (and write) the characterisation report."""
    board = get_board(board_name)
    name = f"{board.name}-xor{params.n_in}x{params.n_out}p{params.max_patches}"
    out_dir = Path(out_dir if out_dir is not None else Path("build") / "characterise" / name).resolve()
    (out_dir / RESULT_FILE).unlink(missing_ok=True)
    harness = XorDecoderHarness(params, board.uart_resource)
    try:
        result = hwbuild.build(AcceleratorConfig(board=board.name), out_dir, seed=seed, progress=progress,
                               design=harness)
    except hwbuild.TimingError as error:  # a decoder slower than the board clock is still characterised
        result = error.result
    built = result.report
    harness_cells = yosys_cell_counts((out_dir / f"{hwbuild.DESIGN_NAME}.rpt").read_text(), hwbuild.DESIGN_NAME)
    progress("[+] synthesis of the decoder alone (yosys) ...")
    decoder_cells = _synthesise_decoder_alone(params, board, hwbuild.find_tool("yosys"), out_dir)

    fmax_mhz = min(built["fmax_mhz"].values())
    report = {
        "block": "xor_decoder",
        **{key: built[key] for key in ("board", "device", "package", "seed")},
        "params": {key: value for key, value in params.describe().items() if key != "m"},
        "m_ones": sum(row.bit_count() for row in params.m),
        "latency_cycles": params.latency,
        "resources": built["resources"],
        # From yosys's statistics: the whole harness, and the decoder synthesised by itself.
        "harness_cells": harness_cells,
        "decoder_cells": decoder_cells,
        "fmax_mhz": fmax_mhz,
        "constraint_mhz": min(built["constraint_mhz"].values()),
        "board_clock_mhz": built["target_mhz"],
        "meets_board_clock": built["timing_met"],
        # One slice (n_out weight bits of one bit-plane) per cycle at full rate.
        "weights_per_s": round(params.n_out * fmax_mhz * 1e6),
        "build_seconds": built["build_seconds"],
        "tools": built["tools"],
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_characterisation(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [f"xor_decoder n_in={p['n_in']} n_out={p['n_out']} max_patches={p['max_patches']} on "
             f"{report['board']} ({report['device']}), latency {report['latency_cycles']} cycles"]
    for name, use in report["resources"].items():
        lines.append(f"  {name:<16}{use['used']:>8} / {use['available']}")
    for what in ("harness", "decoder"):
        cells = report[f"{what}_cells"]
        lines.append(f"  {what + ' (yosys)':<16}{cells['luts']:>8} LUT4 {cells['ffs']:>6} FF")
    lines.append(f"  Fmax {report['fmax_mhz']:.2f} MHz (constraint {report['constraint_mhz']:.2f} MHz, "
                 f"board clock {report['board_clock_mhz']:.2f} MHz)")
    lines.append(f"  {report['weights_per_s'] / 1e9:.2f} G weights/s (n_out x Fmax)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.characterise",
                                     description="Resources and Fmax of the XOR decoder alone on a board.")
    parser.add_argument("--board", default=DEFAULT_BOARD, help=f"{', '.join(BOARDS)} (default: %(default)s)")
    parser.add_argument("--n-in", type=int, default=24)
    parser.add_argument("--n-out", type=int, default=200)
    parser.add_argument("--max-patches", type=int, default=2)
    parser.add_argument("--matrix-seed", type=int, default=1, help="seed of the random full-rank M")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    try:
        get_board(args.board)
        m = random_full_rank_matrix(args.n_out, args.n_in, args.matrix_seed) if args.n_out > args.n_in else None
        params = XorDecoderParams(args.n_in, args.n_out, args.max_patches, m if m is not None else ())
    except (KeyError, ValueError) as error:
        parser.error(str(error))
    try:
        report = characterise(params, args.board, args.out, seed=args.seed)
    except hwbuild.BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_characterisation(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
