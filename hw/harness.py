"""Harnesses that keep one block alive on a board for `hw.characterise`, and the blocks it characterises.

`StreamHarness` places a block with stream ports between registers fed and observed through the board's
UART pins; `XorDecoderHarness` and `BimUnpackerHarness` hold the FC engine's blocks, `spectral_block` and
`spectral_harness` the SPEC2 (and baseline) blocks with the characterisation's default parameters.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from amaranth import Cat, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer

from .baseline.conv import BaselineConv, BaselineConvParams
from .bim_unpacker import BimUnpacker, BimUnpackerParams
from .spectral.fft import Fft2d, FftParams, Ifft2d
from .spectral.overlap_add import OverlapAdd, OverlapAddParams
from .spectral.spectral_mac import SpectralMac, SpectralMacParams
from .xor_decoder import XorDecoder, XorDecoderParams


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
class SpectralBlock:
    """One SPEC2 (or baseline) block characterised in a multi-stream `StreamHarness`."""

    key: str  #: the `--block` choice
    name: str  #: the block's module name (the harness submodule and its alone synthesis)
    make: Callable[[], wiring.Component]  #: a fresh instance of the block
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[str, Any]
    #: None: synthesise the block alone too; else why not (recorded in the report instead of cell counts).
    alone_unavailable: str | None = None
    #: LUT mapper for its builds and its alone synthesis (`hw.toolchain.ABC_LUT_MAPPING`).
    lut_mapper: str = "abc9"


def _default_fft_params() -> FftParams:
    from hw.spec.spectral.fixed import SpectralFixed
    from hw.spec.spectral.geometry import DEFAULT_N
    return FftParams.from_spec(SpectralFixed(), DEFAULT_N)


#: The baseline layer: LeNet-5 conv2 (6 -> 16 channels, 14 x 14 in, K = 5, "valid": 10 x 10 out), M = 16.
BASELINE_PARAMS = BaselineConvParams(c_in=6, c_out=16, height=14, width=14, m=16, k=5, padding="valid")


def spectral_block(key: str, *, mac_p: int = 4, mac_b: int = 8, mac_max_c_in: int = 64, oaa_max: int = 28,
                baseline_m: int = 16) -> SpectralBlock:
    """The `--block` `key` (fft2d, ifft2d, mac, oaa, baseline, conv) with the defaults of the characterisation."""
    if key in ("fft2d", "ifft2d"):
        fp = _default_fft_params()
        block = Fft2d if key == "fft2d" else Ifft2d
        return SpectralBlock(key, key, lambda: block(fp), ("i",), ("o",), fp.describe(),
                          # `synth_ecp5` of the block alone with `*` twiddles (twiddle_mult "dsp") hits an internal
                          # assert in yosys's abc9; the default shift-add twiddles synthesise alone.
                          alone_unavailable="yosys abc9 assert" if fp.twiddle_mult == "dsp" else None)
    if key == "mac":
        mp = SpectralMacParams(p=mac_p, b=mac_b, max_c_in=mac_max_c_in)
        return SpectralBlock("mac", "spectral_mac", lambda: SpectralMac(mp), ("x", "w"), ("o",), mp.describe())
    if key == "oaa":
        op = OverlapAddParams(max_height=oaa_max, max_width=oaa_max)
        return SpectralBlock("oaa", "overlap_add", lambda: OverlapAdd(op), ("cfg", "i"), ("o",),
                          {k: getattr(op, k) for k in ("n", "l", "k", "padding", "max_height", "max_width",
                                                       "in_bits", "mult_bits", "out_bits", "relu")})
    if key == "baseline":
        bp = BASELINE_PARAMS if baseline_m == BASELINE_PARAMS.m else \
            BaselineConvParams(**{**BASELINE_PARAMS.__dict__, "m": baseline_m})
        return SpectralBlock("baseline", "baseline_conv", lambda: BaselineConv(bp), ("quant", "w", "x"), ("o",),
                          {k: getattr(bp, k) for k in ("c_in", "c_out", "height", "width", "m", "k", "padding",
                                                       "act_bits", "weight_bits", "mult_bits", "out_bits")})
    if key == "conv":
        from hw.spectral.pipeline import SpectralConv, SpectralConvParams

        cp = SpectralConvParams(p=mac_p, b=mac_b, **CONV_SIZE)
        # yosys's abc9 mis-maps the layer's FFT pipeline on ECP5 (see hw.toolchain.ABC_LUT_MAPPING).
        return SpectralBlock("conv", "spectral_conv", lambda: SpectralConv(cp), ("cfg", "x", "w", "quant"), ("o",),
                          cp.describe(), lut_mapper="abc")
    raise ValueError(f"unknown SPEC2 block {key!r}: one of {', '.join(SPECTRAL_BLOCKS)}")


SPECTRAL_BLOCKS = ("fft2d", "ifft2d", "mac", "oaa", "baseline", "conv")
#: The whole layer's characterisation size: VGG-like channel counts (64 -> 64) on maps up to 14 x 14, whose
#: spectra (C_in x tiles x bins) still fit the ECP5-85F's block RAM.
CONV_SIZE = {"k": 3, "l": 6, "max_c_in": 64, "max_c_out": 64, "max_height": 14, "max_width": 14}


def spectral_harness(block: SpectralBlock, uart_resource: tuple[str, int] = ("uart", 0)) -> StreamHarness:
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
