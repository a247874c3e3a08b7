"""Resources and Fmax of one block alone on a board: `python -m hw.characterise --board icebreaker [--block bim]`.

SPEC2 blocks (`--block fft2d`, `ifft2d`, `mac`, `oaa`, `baseline`) go through `characterise_spec2`: a multi-stream
`StreamHarness`, out dir `build/characterise/<board>-<block>/`; the report adds DSPs, BRAMs, the RTL's `$mul`
count, whether multipliers landed on DSPs, and records a design that does not fit (nextpnr's error line) or
a block whose alone synthesis is unavailable (Fft2d with DSP twiddles: yosys's abc9 asserts) instead of
failing.

The block (`--block xor`, the default: the XOR-gate weight decoder; `--block bim`: the BIM mask unpacker)
is placed in a harness (`StreamHarness`), a top that keeps all of it alive with a handful of pins, and
built with the same toolchain stages, tools and nextpnr options as `hw.build`. The out dir (default
`build/characterise/<board>-xor<n_in>x<n_out>p<max_patches>/` or `<board>-bim<m_t>x<n_t>r<r>/`) gets the
bitstream, the tool logs and `characterisation.json`: resources, Fmax, and the block's rate at Fmax
(decoded weights per second, n_out × Fmax; mask bits per second, n_t × Fmax).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from amaranth import Cat, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer

from boards import BOARDS, DEFAULT_BOARD, Board, get_board

from . import build as hwbuild
from .baseline.conv import BaselineConv, BaselineConvParams
from .bim_unpacker import BimUnpacker, BimUnpackerParams
from .config import AcceleratorConfig
from .spectral.fft import Fft2d, FftParams, Ifft2d
from .spectral.overlap_add import OverlapAdd, OverlapAddParams
from .spectral.spectral_mac import SpectralMac, SpectralMacParams
from .xor_decoder import XorDecoder, XorDecoderParams

RESULT_FILE = "characterisation.json"


class StreamHarness(wiring.Component):
    """A block with stream ports `i` and `o` between registers, fed and observed through the board's UART pins.

    Nothing of the block can be optimised away, and no path starts or ends at a pin:

    * Input payload: a shift register as wide as one beat, advanced on each accepted beat by one bit
      (the UART RX pin, synchronised, XORed with the register's top bit and a LFSR bit), so every payload
      bit is a register whose value depends on the pin.
    * Input `valid` and output `ready`: bits of a free-running 16-bit LFSR with the pin mixed in, so
      gaps and backpressure both occur and the stall logic is exercised; `valid` and the payload only
      change after a handshake, as the stream rules ask.
    * Output: the output payload bits (registers in both blocks: their last stage) are XOR-reduced by a
      tree of registered 4-input XORs, together with the output handshake, to the UART TX pin. A parity
      of all outputs depends on every output bit's logic, so all of it stays.

    A block with several streams names them (`inputs`, `outputs`): each input stream gets its own shift
    register and its own LFSR bits for `valid` and the shift; every output's `ready` has its own LFSR bits,
    and all output payloads and handshakes go into the one XOR tree. One `i` and one `o` (the default) give
    exactly the original harness.

    What the harness adds beside the block: about beat-width + 16 + output-width / 3 flip-flops and
    output-width / 3 LUTs.
    """

    #: Per input stream (in `inputs` order): the LFSR bits ORed into `valid` and the one mixed into the shift.
    INPUT_TAPS = (((0, 3), 5), ((1, 9), 6), ((2, 14), 8), ((4, 12), 10))
    #: Per output stream (in `outputs` order): the LFSR bits ORed into `ready`.
    OUTPUT_TAPS = ((7, 11), (13, 15), (4, 10), (1, 8))

    def __init__(self, block: wiring.Component, uart_resource: tuple[str, int] = ("uart", 0), name: str = "block",
                 inputs: tuple[str, ...] = ("i",), outputs: tuple[str, ...] = ("o",)):
        if not 1 <= len(inputs) <= len(self.INPUT_TAPS) or not 1 <= len(outputs) <= len(self.OUTPUT_TAPS):
            self._MustUse__silence = block._MustUse__silence = True
            raise ValueError(f"a harness drives 1..{len(self.INPUT_TAPS)} input and observes "
                             f"1..{len(self.OUTPUT_TAPS)} output streams, got {len(inputs)} and {len(outputs)}")
        self.block = block
        self.uart_resource = uart_resource
        self.block_name = name  # the submodule's name: it prefixes every net of the block, which placement sees
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        uart = platform.request(*self.uart_resource, dir="-")
        m.submodules.rx_pin = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.tx_pin = tx_pin = io.Buffer("o", uart.tx)
        block = m.submodules[self.block_name] = self.block
        pin = Signal()
        m.submodules.sync_rx = FFSynchronizer(rx_pin.i, pin)

        lfsr = Signal(16, init=1)  # x^16 + x^14 + x^13 + x^11 + 1, maximal length
        m.d.sync += lfsr.eq(Cat(lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10] ^ pin, lfsr[:15]))

        single = len(self.inputs) == 1  # one input stream: the signal names of the original harness
        for port_name, ((v0, v1), mix) in zip(self.inputs, self.INPUT_TAPS):
            port = getattr(block, port_name)
            width = len(Value.cast(port.payload))
            source = Signal(width, init=1, name="source" if single else f"{port_name}_source")
            valid = Signal(name="valid" if single else f"{port_name}_valid")
            accepted = port.valid & port.ready
            with m.If(accepted):
                m.d.sync += source.eq(Cat(source[-1] ^ pin ^ lfsr[mix], source[:-1]))
            with m.If(~valid | port.ready):
                m.d.sync += valid.eq(lfsr[v0] | lfsr[v1])  # offered 3 cycles in 4
            m.d.comb += [port.valid.eq(valid), port.payload.eq(source)]
        level = []
        for port_name, (r0, r1) in zip(self.outputs, self.OUTPUT_TAPS):
            port = getattr(block, port_name)
            m.d.comb += port.ready.eq(lfsr[r0] | lfsr[r1])  # ready 3 cycles in 4
            level += [*Value.cast(port.payload), port.valid & port.ready]

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


class XorDecoderHarness(StreamHarness):
    """`XorDecoder` in a `StreamHarness`: the parity of its n_out outputs depends on every row of M, so every
    XOR tree stays."""

    def __init__(self, params: XorDecoderParams, uart_resource: tuple[str, int] = ("uart", 0)):
        self.params = params
        super().__init__(XorDecoder(params), uart_resource, "decoder")


class BimUnpackerHarness(StreamHarness):
    """`BimUnpacker` in a `StreamHarness`: random P rows, Z rows, row indices and tags, so both Z buffers
    (2·r·n_t flip-flops) and the n_t AND-OR trees stay."""

    def __init__(self, params: BimUnpackerParams, uart_resource: tuple[str, int] = ("uart", 0)):
        self.params = params
        super().__init__(BimUnpacker(params), uart_resource, "unpacker")


@dataclass(frozen=True)
class Spec2Block:
    """One SPEC2 (or baseline) block characterised in a multi-stream `StreamHarness`."""

    key: str  #: the `--block` choice
    name: str  #: the block's module name (the harness submodule and its alone synthesis)
    make: Callable[[], wiring.Component]  #: a fresh instance of the block
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[str, Any]
    #: None: synthesise the block alone too; else why not (recorded in the report instead of cell counts).
    alone_unavailable: str | None = None
    #: LUT mapper for its builds and its alone synthesis (`hw.build.ABC_LUT_MAPPING`).
    lut_mapper: str = "abc9"


def _default_fft_params() -> FftParams:
    from hw.spec.spectral.fixed import Spec2Fixed
    return FftParams.from_spec(Spec2Fixed(), 8)


#: The baseline layer: LeNet-5 conv2 (6 -> 16 channels, 14 x 14 in, K = 5, "valid": 10 x 10 out), M = 16.
BASELINE_PARAMS = BaselineConvParams(c_in=6, c_out=16, height=14, width=14, m=16, k=5, padding="valid")


def spec2_block(key: str, *, mac_p: int = 4, mac_b: int = 8, mac_max_c_in: int = 64, oaa_max: int = 28,
                baseline_m: int = 16) -> Spec2Block:
    """The `--block` `key` (fft2d, ifft2d, mac, oaa, baseline, conv) with the defaults of the characterisation."""
    if key in ("fft2d", "ifft2d"):
        fp = _default_fft_params()
        block = Fft2d if key == "fft2d" else Ifft2d
        return Spec2Block(key, key, lambda: block(fp), ("i",), ("o",), fp.describe(),
                          # `synth_ecp5` of the block alone with `*` twiddles (twiddle_mult "dsp") hits an internal
                          # assert in yosys's abc9; the default shift-add twiddles synthesise alone.
                          alone_unavailable="yosys abc9 assert" if fp.twiddle_mult == "dsp" else None)
    if key == "mac":
        mp = SpectralMacParams(p=mac_p, b=mac_b, max_c_in=mac_max_c_in)
        return Spec2Block("mac", "spectral_mac", lambda: SpectralMac(mp), ("x", "w"), ("o",), mp.describe())
    if key == "oaa":
        op = OverlapAddParams(max_height=oaa_max, max_width=oaa_max)
        return Spec2Block("oaa", "overlap_add", lambda: OverlapAdd(op), ("cfg", "i"), ("o",),
                          {k: getattr(op, k) for k in ("n", "l", "k", "padding", "max_height", "max_width",
                                                       "in_bits", "mult_bits", "out_bits", "relu")})
    if key == "baseline":
        bp = BASELINE_PARAMS if baseline_m == BASELINE_PARAMS.m else \
            BaselineConvParams(**{**BASELINE_PARAMS.__dict__, "m": baseline_m})
        return Spec2Block("baseline", "baseline_conv", lambda: BaselineConv(bp), ("quant", "w", "x"), ("o",),
                          {k: getattr(bp, k) for k in ("c_in", "c_out", "height", "width", "m", "k", "padding",
                                                       "act_bits", "weight_bits", "mult_bits", "out_bits")})
    if key == "conv":
        from hw.spectral.pipeline import Spec2Conv, Spec2ConvParams

        cp = Spec2ConvParams(p=mac_p, b=mac_b, **CONV_SIZE)
        # yosys's abc9 mis-maps the layer's FFT pipeline on ECP5 (see hw.build.ABC_LUT_MAPPING).
        return Spec2Block("conv", "spec2_conv", lambda: Spec2Conv(cp), ("cfg", "x", "w", "quant"), ("o",),
                          cp.describe(), lut_mapper="abc")
    raise ValueError(f"unknown SPEC2 block {key!r}: one of {', '.join(SPEC2_BLOCKS)}")


SPEC2_BLOCKS = ("fft2d", "ifft2d", "mac", "oaa", "baseline", "conv")
#: The whole layer's characterisation size: VGG-like channel counts (64 -> 64) on maps up to 14 x 14, whose
#: spectra (C_in x tiles x bins) still fit the ECP5-85F's block RAM.
CONV_SIZE = {"k": 3, "l": 6, "max_c_in": 64, "max_c_out": 64, "max_height": 14, "max_width": 14}


def spec2_harness(block: Spec2Block, uart_resource: tuple[str, int] = ("uart", 0)) -> StreamHarness:
    """`block` in a `StreamHarness` driving each input stream from its own shift register."""
    return StreamHarness(block.make(), uart_resource, block.name, block.inputs, block.outputs)


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


def _synthesise_alone(block: wiring.Component, name: str, stem: str, board: Board, yosys: str,
                      out_dir: Path, lut_mapper: str = "abc9") -> dict[str, int]:
    """LUT4s and flip-flops of `block` by itself, after the family's yosys synthesis (no harness)."""
    from amaranth.back import rtlil

    (out_dir / f"{stem}.il").write_text(rtlil.convert(block, name=name))
    script = f"read_rtlil {stem}.il; {hwbuild.synth_script(board.family, name, lut_mapper)}"
    hwbuild._run_stage([yosys, "-q", "-l", f"{stem}.rpt", "-p", script], out_dir / f"yosys-{stem}.log")
    return yosys_cell_counts((out_dir / f"{stem}.rpt").read_text(), name)


def _build_harness(harness: StreamHarness, alone: wiring.Component, name: str, board: Board, out_dir: Path, *,
                   seed: int, stem: str, progress: Callable[[str], None],
                   ) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """Build `harness` for `board` into `out_dir`, then synthesise `alone` (a fresh instance of the same block)
    as module `name`: (hw.build's report, harness cells, block-alone cells)."""
    (out_dir / RESULT_FILE).unlink(missing_ok=True)
    try:
        result = hwbuild.build(AcceleratorConfig(board=board.name), out_dir, seed=seed, progress=progress,
                               design=harness)
    except hwbuild.TimingError as error:  # a block slower than the board clock is still characterised
        result = error.result
    harness_cells = yosys_cell_counts((out_dir / f"{hwbuild.DESIGN_NAME}.rpt").read_text(), hwbuild.DESIGN_NAME)
    progress(f"[+] synthesis of the {name.replace('_', ' ')} alone (yosys) ...")
    block_cells = _synthesise_alone(alone, name, stem, board, hwbuild.find_tool("yosys"), out_dir)
    return result.report, harness_cells, block_cells


def _timing(built: dict[str, Any]) -> dict[str, Any]:
    return {
        "fmax_mhz": min(built["fmax_mhz"].values()),
        "constraint_mhz": min(built["constraint_mhz"].values()),
        "board_clock_mhz": built["target_mhz"],
        "meets_board_clock": built["timing_met"],
    }


def _out_dir(out_dir: Path | None, name: str) -> Path:
    return Path(out_dir if out_dir is not None else Path("build") / "characterise" / name).resolve()


def characterise(params: XorDecoderParams | BimUnpackerParams, board_name: str, out_dir: Path | None = None, *,
                 seed: int = 1, progress: Callable[[str], None] = hwbuild._stderr) -> dict[str, Any]:
    """Build the block's harness for a board; return (and write) the characterisation report.

    `XorDecoderParams` characterise the XOR decoder; `BimUnpackerParams` the BIM unpacker (`characterise_bim`).
    """
    if isinstance(params, BimUnpackerParams):
        return characterise_bim(params, board_name, out_dir, seed=seed, progress=progress)
    board = get_board(board_name)
    out_dir = _out_dir(out_dir, f"{board.name}-xor{params.n_in}x{params.n_out}p{params.max_patches}")
    built, harness_cells, decoder_cells = _build_harness(
        XorDecoderHarness(params, board.uart_resource), XorDecoder(params), "xor_decoder", board, out_dir, seed=seed,
        stem="decoder", progress=progress)
    timing = _timing(built)
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
        **timing,
        # One slice (n_out weight bits of one bit-plane) per cycle at full rate.
        "weights_per_s": round(params.n_out * timing["fmax_mhz"] * 1e6),
        "build_seconds": built["build_seconds"],
        "tools": built["tools"],
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def characterise_bim(params: BimUnpackerParams, board_name: str, out_dir: Path | None = None, *, seed: int = 1,
                     progress: Callable[[str], None] = hwbuild._stderr) -> dict[str, Any]:
    """Build `BimUnpackerHarness(params)` for a board; return (and write) the characterisation report."""
    board = get_board(board_name)
    out_dir = _out_dir(out_dir, f"{board.name}-bim{params.m_t}x{params.n_t}r{params.r}")
    built, harness_cells, unpacker_cells = _build_harness(
        BimUnpackerHarness(params, board.uart_resource), BimUnpacker(params), "bim_unpacker", board, out_dir,
        seed=seed, stem="unpacker", progress=progress)
    timing = _timing(built)
    report = {
        "block": "bim_unpacker",
        **{key: built[key] for key in ("board", "device", "package", "seed")},
        "params": params.describe(),
        "latency_cycles": params.latency,
        "resources": built["resources"],
        # From yosys's statistics: the whole harness, and the unpacker synthesised by itself.
        "harness_cells": harness_cells,
        "unpacker_cells": unpacker_cells,
        **timing,
        # One mask row (n_t bits) per cycle at full rate, across tiles when m_t >= r.
        "mask_bits_per_s": round(params.n_t * timing["fmax_mhz"] * 1e6),
        "build_seconds": built["build_seconds"],
        "tools": built["tools"],
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


DSP_CELLS = {"ecp5": "MULT18X18D", "ice40": "ICESTORM_DSP"}  #: nextpnr's DSP resource (yosys: SB_MAC16)
BRAM_CELLS = {"ecp5": ("DP16KD",), "ice40": ("ICESTORM_RAM", "ICESTORM_SPRAM")}


def yosys_dsp_cells(log: str, top: str) -> int:
    """DSP cells (MULT18X18D, SB_MAC16) in the last `stat` of module `top` in a yosys log."""
    block = log[log.rfind(f"=== {top} ==="):].split("=== design hierarchy ===")[0]
    return sum(int(n) for n in re.findall(r"^\s+(\d+)\s+(?:MULT18X18D|SB_MAC16)\s*$", block, re.M))


def rtlil_multipliers(rtlil_text: str) -> int:
    """`$mul` cells in an RTLIL design: the multipliers the RTL asks for (before yosys maps them)."""
    return len(re.findall(r"^\s*cell \$mul ", rtlil_text, re.M))


def nextpnr_error(log: str) -> str:
    """The first ERROR line of a nextpnr log (why it did not fit), else its last non-empty line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "no log")


def characterise_spec2(block: Spec2Block | str, board_name: str, out_dir: Path | None = None, *, seed: int = 1,
                       alone: bool = True, progress: Callable[[str], None] = hwbuild._stderr) -> dict[str, Any]:
    """Build a SPEC2 block's multi-stream harness for a board; return (and write) the characterisation report.

    Unlike `characterise`, a design that does not fit the device is reported, not raised: `fits` False and
    `error` the nextpnr (or yosys) error line. The block alone is synthesised unless `alone` is False or
    `block.alone_unavailable` says why not; a failed alone synthesis is recorded, not raised.
    """
    if isinstance(block, str):
        block = spec2_block(block)
    board = get_board(board_name)
    out_dir = _out_dir(out_dir, f"{board.name}-{block.key}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULT_FILE).unlink(missing_ok=True)
    # The classic abc mapping exists to work around abc9 on the families that need it; elsewhere abc9 maps.
    mapper = block.lut_mapper if board.family in hwbuild.ABC_LUT_MAPPING else "abc9"
    report: dict[str, Any] = {"block": block.name, "board": board.name, "device": board.device,
                              "package": board.package, "seed": seed, "params": block.params,
                              "lut_mapper": mapper}
    harness = spec2_harness(block, board.uart_resource)
    try:
        built = hwbuild.build(AcceleratorConfig(board=board.name), out_dir, seed=seed, progress=progress,
                              design=harness, lut_mapper=mapper).report
    except hwbuild.TimingError as error:  # a block slower than the board clock is still characterised
        built = error.result.report
    except hwbuild.BuildError as error:
        log = out_dir / f"nextpnr-{board.family}.log"
        stage_failed = "place & route" in str(error).splitlines()[0] and log.is_file()
        line = nextpnr_error(log.read_text(errors="replace")) if stage_failed else str(error).splitlines()[0]
        report.update({"fits": False, "error": f"does not fit: {line}" if stage_failed else line})
        rpt = out_dir / f"{hwbuild.DESIGN_NAME}.rpt"
        if stage_failed and rpt.is_file():  # synthesis finished: what it asked of the device
            text = rpt.read_text(errors="replace")
            report["harness_cells"] = yosys_cell_counts(text, hwbuild.DESIGN_NAME)
            report["yosys_dsp_cells"] = yosys_dsp_cells(text, hwbuild.DESIGN_NAME)
        (out_dir / RESULT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        return report
    resources = built["resources"]
    dsp = resources.get(DSP_CELLS[board.family], {}).get("used", 0)
    multipliers = rtlil_multipliers((out_dir / f"{hwbuild.DESIGN_NAME}.il").read_text())
    report.update({
        "fits": True,
        "resources": resources,
        "harness_cells": yosys_cell_counts((out_dir / f"{hwbuild.DESIGN_NAME}.rpt").read_text(), hwbuild.DESIGN_NAME),
        "dsp": dsp,
        "bram": sum(resources.get(name, {}).get("used", 0) for name in BRAM_CELLS[board.family]),
        # `$mul` cells in the RTL (constant ones included: yosys may fold those into logic) and whether any
        # multiplier ended up in DSP blocks.
        "rtl_multipliers": multipliers,
        "multipliers_on_dsps": dsp > 0,
        **_timing(built),
        "build_seconds": built["build_seconds"],
        "tools": built["tools"],
    })
    if not alone or block.alone_unavailable:
        report["alone_cells"] = None
        report["alone_synthesis"] = f"unavailable ({block.alone_unavailable or 'not run'})"
    else:
        progress(f"[+] synthesis of the {block.name.replace('_', ' ')} alone (yosys) ...")
        try:
            report["alone_cells"] = _synthesise_alone(block.make(), block.name, block.key, board,
                                                      hwbuild.find_tool("yosys"), out_dir, mapper)
            report["alone_synthesis"] = "ok"
        except hwbuild.BuildError as error:
            log = "".join(path.read_text(errors="replace") for path in
                          (out_dir / f"yosys-{block.key}.log", out_dir / f"{block.key}.rpt") if path.is_file())
            why = "yosys abc9 assert" if "abc" in log.lower() and "assert" in log.lower() \
                else str(error).splitlines()[0]
            report["alone_cells"] = None
            report["alone_synthesis"] = f"unavailable ({why})"
    (out_dir / RESULT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_spec2_characterisation(report: dict[str, Any]) -> str:
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
    parser.add_argument("--block", choices=("xor", "bim", *SPEC2_BLOCKS), default="xor",
                        help="xor: the XOR-gate weight decoder; bim: the BIM mask unpacker; fft2d: SPEC2's forward "
                             "2-D FFT (N=8, Spec2Fixed widths); ifft2d: its inverse; mac: the spectral MAC; oaa: "
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
    spec2 = parser.add_argument_group("--block fft2d / mac / oaa / baseline")
    spec2.add_argument("--mac-p", type=int, default=4, help="MAC lanes P (default: %(default)s)")
    spec2.add_argument("--mac-b", type=int, default=8, help="MAC spectrum banks B (default: %(default)s)")
    spec2.add_argument("--oaa-max", type=int, default=28, help="largest OaA map side (default: %(default)s)")
    spec2.add_argument("--baseline-m", type=int, default=16, help="baseline multipliers M (default: %(default)s)")
    spec2.add_argument("--no-alone", action="store_true", help="skip synthesising the block alone")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    if args.block in SPEC2_BLOCKS:
        try:
            get_board(args.board)
            block = spec2_block(args.block, mac_p=args.mac_p, mac_b=args.mac_b, oaa_max=args.oaa_max,
                                baseline_m=args.baseline_m)
        except (KeyError, ValueError) as error:
            parser.error(str(error))
        try:
            report = characterise_spec2(block, args.board, args.out, seed=args.seed, alone=not args.no_alone)
        except hwbuild.BuildError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(format_spec2_characterisation(report))
        return 0
    try:
        get_board(args.board)
        if args.block == "bim":
            params = BimUnpackerParams(args.m_t, args.n_t, args.rank)
        else:
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
