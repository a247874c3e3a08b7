"""Region memories: `SpramMemory` (a region in the iCE40UP5K's SPRAM) and `RegionReader` (a region as a stream).

`SpramMemory` puts a region memory in the iCE40UP5K's single-port SPRAM, behind the two ports of an Amaranth
`Memory`.

A LOAD-able region (`hw.sequencer`) is written only by LOAD and read only by its streamer, never both in one
cycle, so one single-port RAM with an address mux serves both ports. `SpramMemory` offers exactly the ports the
sequencer uses on a `Memory` (a `WritePort.Signature` and a `ReadPort.Signature`, same member names and
semantics: a read is registered, and its data holds while `read.en` is low) and puts the word in
ceil(width / 16) SPRAM lanes side by side:

* on an iCE40 platform, one `SB_SPRAM256KA` per lane (16 bits x 16 384 words);
* in simulation (no platform), a behavioural model of those cells: the same lanes, address mux and chip
  select as on the device, with the cell's undefined output after a write modelled as all ones, so a read
  that overlaps or follows a write without a new read shows up in a testbench;
* on any other platform, a plain `Memory` (its block RAMs are true dual-port).

A write and a read in the same cycle is outside the contract: the write goes ahead and the read's data is
undefined until the next read.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .spec.params import check_int, check_ints, require_params

#: Bits of one SPRAM word (SB_SPRAM256KA DATAIN/DATAOUT).
SPRAM_WIDTH = 16
#: Words of one SPRAM cell (its 14-bit ADDRESS).
SPRAM_DEPTH = 16384


@dataclass(frozen=True)
class SpramParams:
    """Word width (bits) and depth (words) of one SPRAM region; validated on construction, hashable."""

    width: int
    depth: int

    def __post_init__(self) -> None:
        check_ints(self, (("width", 1, None), ("depth", 1, SPRAM_DEPTH)))

    @property
    def lanes(self) -> int:
        """SPRAM cells side by side: one per 16 bits of the word."""
        return -(-self.width // SPRAM_WIDTH)

    @property
    def addr_width(self) -> int:
        return max(1, (self.depth - 1).bit_length())


def is_ice40(platform: object) -> bool:
    """Whether `platform` builds for iCE40 (Amaranth's SiliconBlue platforms), where SB_SPRAM256KA exists."""
    from amaranth.vendor import SiliconBluePlatform

    return isinstance(platform, SiliconBluePlatform)


class SpramLaneModel(wiring.Component):
    """Behavioural model of one SB_SPRAM256KA (awake, all four nibbles written), sized to `depth` words.

    Ports as the cell's: `address`, `datain`, `wren`, `chipselect`, `dataout`. With chipselect a rising edge
    writes (wren) or reads (not wren) the word; without it `dataout` holds. After a write `dataout` is all ones
    (the cell leaves it undefined) until the next read.
    """

    def __init__(self, depth: int):
        self.depth = check_int("depth", depth, 1, SPRAM_DEPTH)
        super().__init__({"address": In(14), "datain": In(SPRAM_WIDTH), "wren": In(1), "chipselect": In(1),
                          "dataout": Out(SPRAM_WIDTH)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.cells = cells = Memory(shape=SPRAM_WIDTH, depth=self.depth, init=[])
        write, read = cells.write_port(), cells.read_port()
        written = Signal()  # the last access was a write: dataout is undefined
        in_range = self.address < self.depth  # the model is shallower than the cell; the rest is never used
        m.d.comb += [write.addr.eq(self.address), write.data.eq(self.datain),
                     write.en.eq(self.chipselect & self.wren & in_range),
                     read.addr.eq(self.address), read.en.eq(self.chipselect & ~self.wren),
                     self.dataout.eq(Mux(written, Const(-1, SPRAM_WIDTH), read.data))]
        with m.If(self.chipselect):
            m.d.sync += written.eq(self.wren)
        return m


class SpramMemory(wiring.Component):
    """`params.width` x `params.depth` words in SPRAM lanes, with `Memory`-like `write` and `read` ports.

    The two ports share the cells' one address: a cycle with `write.en` writes, else one with `read.en` reads
    (module docstring). The lanes' chip select is high only for an access, so the read data holds otherwise.
    """

    def __init__(self, params: SpramParams):
        require_params(self, params, SpramParams)
        self.params = params
        super().__init__({
            "write": Out(WritePort.Signature(addr_width=params.addr_width, shape=params.width)),
            "read": Out(ReadPort.Signature(addr_width=params.addr_width, shape=params.width)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        if platform is not None and not is_ice40(platform):
            m.submodules.cells = cells = Memory(shape=p.width, depth=p.depth, init=[])
            write, read = cells.write_port(), cells.read_port()
            m.d.comb += [write.addr.eq(self.write.addr), write.data.eq(self.write.data), write.en.eq(self.write.en),
                         read.addr.eq(self.read.addr), read.en.eq(self.read.en), self.read.data.eq(read.data)]
            return m

        address = Signal(14)
        chipselect = Signal()
        m.d.comb += [address.eq(Mux(self.write.en, self.write.addr, self.read.addr)),
                     chipselect.eq(self.write.en | self.read.en)]
        datain = Signal(p.lanes * SPRAM_WIDTH)
        dataout = Signal(p.lanes * SPRAM_WIDTH)
        m.d.comb += [datain.eq(self.write.data), self.read.data.eq(dataout[:p.width])]
        for lane in range(p.lanes):
            d_in = datain.word_select(lane, SPRAM_WIDTH)
            d_out = dataout.word_select(lane, SPRAM_WIDTH)
            if platform is None:
                m.submodules[f"lane{lane}"] = cell = SpramLaneModel(p.depth)
                m.d.comb += [cell.address.eq(address), cell.datain.eq(d_in), cell.wren.eq(self.write.en),
                             cell.chipselect.eq(chipselect), d_out.eq(cell.dataout)]
            else:
                m.submodules[f"lane{lane}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=address, i_DATAIN=d_in, i_MASKWREN=Const(0b1111, 4), i_WREN=self.write.en,
                    i_CHIPSELECT=chipselect, i_CLOCK=ClockSignal("sync"), i_STANDBY=Const(0), i_SLEEP=Const(0),
                    i_POWEROFF=Const(1),  # active low: 1 keeps the cell powered
                    o_DATAOUT=d_out)
        return m


__all__ = ["SPRAM_DEPTH", "SPRAM_WIDTH", "SpramLaneModel", "SpramMemory", "SpramParams", "is_ice40"]


class RegionReader(wiring.Component):
    """Streams `count` words of a memory from address `base`, one per cycle, through a synchronous read port.

    The read port is enabled only to fetch a word of the range into a free (or emptying) output register, so
    the data holds under backpressure and no read is ever addressed past the range (the address runs one past
    the last word once it has been fetched). `start` is a one-cycle pulse with `base` and `count` valid;
    `busy` is high until the last word has been handed over. While `hold` is high nothing is fetched (a word
    already fetched is still handed over): the sequencer holds a layer's x at `addr` until the layer before has
    written it.
    """

    def __init__(self, width: int, depth: int):
        self.depth = depth
        super().__init__({
            "start": In(1), "base": In(range(depth)), "count": In(range(depth + 1)), "hold": In(1), "busy": Out(1),
            "addr": Out(range(depth)), "en": Out(1), "data": In(width),
            "o": Out(stream.Signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        left = Signal(range(self.depth + 1))
        advance = ~self.o.valid | self.o.ready
        fetch = advance & (left != 0) & ~self.hold
        m.d.comb += [self.en.eq(fetch), self.o.payload.eq(self.data), self.busy.eq((left != 0) | self.o.valid)]
        with m.If(self.start):
            m.d.sync += [left.eq(self.count), self.addr.eq(self.base)]
        with m.Elif(advance):
            m.d.sync += self.o.valid.eq(fetch)
            with m.If(fetch):
                m.d.sync += [self.addr.eq(self.addr + 1), left.eq(left - 1)]
        return m

