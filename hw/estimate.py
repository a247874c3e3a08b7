"""What an accelerator config will take on its board, before synthesis: `estimate(config)`.

The estimate is a sum of parts (the link, the sequencer, each region, each engine), each part's logic, flip-flops,
block RAM, SPRAM and DSPs, in the units the board's budget and `report.json` use (`UNITS`): LCs, EBR, SPRAM and
DSPs on the iCE40; LUT4s (TRELLIS_COMB), flip-flops, DP16KD and MULT18X18D on the ECP5.

Memories. Every memory of the design is taken from the elaborated accelerator (`UartAccelerator`, no synthesis,
about a second for LeNet-5) and mapped as yosys's `memory_libmap` maps it (`map_memory`): the cheapest of soft
logic (1 per bit, a ROM 1/16 per bit), distributed RAM and block RAM, a block mapping costing its cells (the
family's library: the iCE40's RAM4K 256 x 16 ... 2048 x 2 at 64, the ECP5's DP16KD 1024 x 18 ... 16384 x 1 and
PDPW16KD 512 x 36 at 128, its 16 x 4 LUT RAM at 4), one copy per read port, plus half a unit per bit of the output
mux across depth and of the write-enable demux. An SPRAM region takes one SB_SPRAM256KA per 16 bits of its word.
Memories mapped to flip-flops or LUT RAM add their logic to their part (`MEMORY_LOGIC`).

Logic. Each part's LUT4s and flip-flops as yosys synthesises it (`synth_<family> -noflatten`), from the part's
parameters (`LOGIC`): the link a constant; the sequencer per bit of region words (its LOAD path, descriptor decode
and readers' data); a region's reader per address bit; the FC engine per tile column n_t, its XOR decoder per
n_out (n_in + max_patches log2 n_out), its BIM unpacker per n_t r; the conv engine its forward and inverse 2-D FFT
per N log2 N (the inverse once per output channel in flight, `outs`), its MAC per lane (measured with B = 2 P
banks), the rest of the layer (tiler, IFFT input, overlap-add, kernel replay, crop, pool) a constant, and each
further output channel in flight its IFFT input, overlap-add and MAC drain. Then the family's packing
(`PACKING`): an iCE40 LC holds one LUT4 with its carry and flip-flop, so LCs = LUT4s + a share of the carries
and of the flip-flops that find no LUT of their own (all of a memory's flip-flops); an ECP5 LUT RAM cell takes
5.5 TRELLIS_COMB besides.

DSPs: each multiplier in pieces of the family's DSP (18 x 18 signed on the ECP5; 16 x 16 with signed and unsigned
modes, so 17 bits signed, on the iCE40): the conv
MAC's 4 real products per lane (data_bits x weight_bits), the overlap-add's requantization (ola_bits x mult_bits)
and the FC engine's scale product (a_bits x the slice sum).

Calibration (nextpnr seed 1, the yosys of `hw.build`): the link alone on both boards; `fc_only` on the
iCEBreaker and the ULX3S, and on the iCEBreaker with its FC engine sized 32 x 64 and 128 x 784;
`lenet5(conv=None)` and `lenet5` (README's figures, two output channels in flight; one before) on the ULX3S;
each part synthesised with `-noflatten`, the FC engine at n_out 16 and 64, the SPEC2 MAC alone at (P, B) = (2, 4)
and (4, 8); the FFTs take README's `hw.characterise` figures. `TOLERANCE` is how far a build may land from the
estimate: the calibration builds are within it; a config far from them (another FFT size, many more lanes) is a
guess in the same units.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from amaranth.hdl import Fragment, Instance, MemoryInstance, Shape

from boards import get_board

from .config import AcceleratorConfig
from .spec.spectral.fixed import mac_multipliers
from .spectral.pipeline import SpectralConvParams

#: Generic resource -> the board budget's name, per family (nextpnr's names, as report.json uses them).
UNITS: dict[str, dict[str, str]] = {
    "ice40": {"logic": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM", "dsp": "ICESTORM_DSP"},
    "ecp5": {"logic": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D"},
}
#: What a message calls one unit of each resource.
UNIT_NAMES: dict[str, dict[str, str]] = {
    "ice40": {"logic": "LC", "bram": "EBR", "spram": "SPRAM", "dsp": "DSP"},
    "ecp5": {"logic": "LUT4", "ff": "FF", "bram": "DP16KD", "dsp": "MULT18X18D"},
}
#: How far (relative, and at least the absolute count) a build may land from the estimate, per resource.
TOLERANCE: dict[str, tuple[float, int]] = {"logic": (0.10, 100), "ff": (0.10, 100), "bram": (0.05, 2),
                                            "spram": (0.0, 0), "dsp": (0.0, 1)}


# --- memories --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RamCell:
    """One RAM cell of a family's library as yosys's `memory_libmap` sees it: kind "block" or "distributed", its
    (width, depth) configurations, its cost, and its write-enable byte (0: whole words only)."""

    name: str
    kind: str
    shapes: tuple[tuple[int, int], ...]
    cost: int
    byte: int = 0  #: bits per write enable; 0: the cell's word
    rom: bool = True  #: usable for a memory without write ports


#: The RAM cells yosys maps memories to (its ice40/brams.txt, lattice/brams_16kd.txt and lutrams_trellis.txt).
RAM_CELLS: dict[str, tuple[RamCell, ...]] = {
    "ice40": (RamCell("RAM4K", "block", ((16, 256), (8, 512), (4, 1024), (2, 2048)), 64, byte=1),),
    "ecp5": (RamCell("DP16KD", "block", ((18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)), 128, byte=9),
             RamCell("PDPW16KD", "block", ((36, 512),), 128, byte=9),
             RamCell("DPR16X4", "distributed", ((4, 16),), 4, rom=False)),
}
#: Soft-logic cost per bit of a memory yosys leaves to flip-flops (a ROM: to LUTs), as `memory_libmap` counts it.
LOGIC_COST_RAM, LOGIC_COST_ROM = 1.0, 1 / 16
#: Logic of memories not in block RAM, per family: LUT4s per 2:1 mux bit of a read across words (the ECP5's
#: PFUMX halves a 4:1), and ROM bits per LUT4.
MEMORY_LOGIC: dict[str, dict[str, float]] = {"ice40": {"mux": 1.0, "rom_bits": 24.0},
                                             "ecp5": {"mux": 0.67, "rom_bits": 24.0}}


@dataclass(frozen=True)
class Memory:
    """One memory of the elaborated design: where it is, its word and depth, its ports, its write granularity."""

    path: tuple[str, ...]
    width: int
    depth: int
    read_ports: int
    write_ports: int
    granularity: int

    @property
    def rom(self) -> bool:
        return self.write_ports == 0


@dataclass(frozen=True)
class Mapping:
    """How one memory lands on a family: `kind` "block", "distributed" or "logic", the cell and how many, the rows
    of cells across its depth, and the depth those rows hold (what a deeper memory would cost nothing more for)."""

    kind: str
    cell: str | None
    cells: int
    rows: int
    holds: int
    cost: float


def map_memory(family: str, mem: Memory) -> Mapping:
    """The mapping yosys's `memory_libmap` picks for `mem` on `family`: the cheapest of soft logic and each cell
    configuration (module docstring); a tie goes to logic, as there."""
    bits = mem.width * mem.depth
    best = Mapping("logic", None, 0, 1, mem.depth, bits * (LOGIC_COST_ROM if mem.rom else LOGIC_COST_RAM))
    copies = max(1, mem.read_ports)  # each cell has one read port beside the write
    lanes = mem.width // mem.granularity if mem.write_ports else 1
    for cell in RAM_CELLS[family]:
        if mem.rom and not cell.rom:
            continue
        for width, depth in cell.shapes:
            if lanes > 1:
                if cell.byte == 1 and width != max(w for w, _ in cell.shapes):
                    continue  # the RAM4K has bit enables only at 16 bits
                byte = min(cell.byte or width, width)  # a lane takes whole write-enable bytes of the cell
                word = lanes * -(-mem.granularity // byte) * byte
            else:
                word = mem.width
            rows = -(-mem.depth // depth)
            cells = -(-word // width) * rows * copies
            cost = cell.cost * cells + 0.5 * (rows - 1) * mem.width * copies
            if rows > 1:
                cost += 0.5 * rows * lanes * mem.write_ports
            if cost < best.cost:
                best = Mapping(cell.kind, cell.name, cells, rows, rows * depth, cost)
    return best


def memories(config: AcceleratorConfig) -> tuple[list[Memory], list[tuple[str, ...]]]:
    """Every memory of the accelerator as elaborated for its board, and the path of every SB_SPRAM256KA."""
    from .top import UartAccelerator  # the design, elaborated only here

    board = get_board(config.board)
    fragment = Fragment.get(UartAccelerator(config), board.make_platform())
    mems: list[Memory] = []
    sprams: list[tuple[str, ...]] = []
    for path, frag in _fragments(fragment, ()):
        if isinstance(frag, Instance) and frag.type == "SB_SPRAM256KA":
            sprams.append(path)
        elif isinstance(frag, MemoryInstance):
            width = Shape.cast(frag._data.shape).width
            writes = frag._write_ports
            mems.append(Memory(path, width, frag._data.depth, len(frag._read_ports), len(writes),
                               min((port._granularity for port in writes), default=width)))
    return mems, sprams


def _fragments(fragment: Fragment, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Fragment]]:
    yield path, fragment
    for sub, name, *_ in fragment.subfragments:
        yield from _fragments(sub, (*path, str(name)))


# --- logic -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logic:
    """LUT4s (an ECP5 CCU2C counts two), iCE40 carries and flip-flops, as yosys synthesises a part; `ff_alone`
    are the flip-flops of memories left to logic, which no LUT feeds (an iCE40 LC each)."""

    lut: float = 0.0
    carry: float = 0.0
    ff: float = 0.0
    ff_alone: float = 0.0

    def __add__(self, other: Logic) -> Logic:
        return Logic(self.lut + other.lut, self.carry + other.carry, self.ff + other.ff,
                     self.ff_alone + other.ff_alone)

    def __mul__(self, k: float) -> Logic:
        return Logic(self.lut * k, self.carry * k, self.ff * k, self.ff_alone * k)

    __rmul__ = __mul__


#: Each part's logic per unit of its parameters (module docstring), per family; the conv engine's blocks at N = 8.
LOGIC: dict[str, dict[str, Logic]] = {
    "ice40": {
        "link": Logic(800, 103, 330),                      # UART, frames, CRC, payload and INFO readers, dispatch
        "sequencer": Logic(384, 248, 329), "sequencer_bit": Logic(1.71, 0.2, 1.74),  # per bit of all region words
        "reader_bit": Logic(4.5, 1.8, 2.2),                # a region's streamer, per address bit
        "spram_region": Logic(14, 0, 0),                   # the shared address mux of an SPRAM region
        "fc": Logic(592, 115, 315), "fc_nt": Logic(45.9, 15.6, 10.6),
        "xor": Logic(61, 0, 9), "xor_term": Logic(0.146, 0, 0), "xor_nout": Logic(0, 0, 3.12),
        "bim": Logic(5, 0, 6), "bim_nt": Logic(0, 0, 1), "bim_ntr": Logic(0.52, 0, 2),
        "fft": Logic(5195, 0, 0), "ifft": Logic(7343, 0, 0),
        "mac": Logic(342, 0, 302), "mac_lane": Logic(2019, 0, 372), "conv_rest": Logic(2235, 0, 4960),
        "conv_path": Logic(5100, 0, 2065),
    },
    "ecp5": {
        "link": Logic(880, 0, 300),
        "sequencer": Logic(0, 0, 300), "sequencer_bit": Logic(5.1, 0, 1.6),
        "reader_bit": Logic(5.5, 0, 2.2),
        "spram_region": Logic(0, 0, 0),
        "fc": Logic(797, 0, 169), "fc_nt": Logic(53.5, 0, 19.2),
        "xor": Logic(38, 0, 9), "xor_term": Logic(0.357, 0, 0), "xor_nout": Logic(0, 0, 3.12),
        "bim": Logic(9, 0, 6), "bim_nt": Logic(0, 0, 1), "bim_ntr": Logic(0.5, 0, 2),
        "fft": Logic(2169, 0, 0), "ifft": Logic(3197, 0, 0),  # SDF passes: 0.63 and 0.65 of the parallel ones
        # Flip-flops recalibrated on the LeNet-5 build of SDF passes (12 312 FF, 4 444 fewer): a third per transform.
        "mac": Logic(228, 0, 302), "mac_lane": Logic(1346, 0, 372), "conv_rest": Logic(1490, 0, 2657),
        "conv_path": Logic(3400, 0, 914),
    },
}
#: How a family packs yosys's cells: the iCE40 LCs a carry and a flip-flop take besides the LUT4s (those that find
#: no LUT of their own: nextpnr's "CARRY only" and "DFF only"; the link's counters and state pack with their
#: LUTs, `ff_link`); ECP5 TRELLIS_COMB per LUT RAM cell besides the LUT4s.
PACKING: dict[str, dict[str, float]] = {"ice40": {"carry": 0.37, "ff": 0.48, "ff_link": 0.10},
                                        "ecp5": {"distributed": 5.5}}
#: Bits of a signed operand one of the family's DSP multipliers takes.
DSP_BITS = {"ice40": 17, "ecp5": 18}  # SB_MAC16: 16 x 16 with signed and unsigned modes


def dsp_pieces(family: str, *widths: int) -> int:
    """DSP blocks one multiplier of signed operands of `widths` bits takes on `family`."""
    return math.prod(-(-w // DSP_BITS[family]) for w in widths)


def _fc_logic(family: str, config: AcceleratorConfig) -> tuple[Logic, int]:
    f = config.fc
    c = LOGIC[family]
    term = f.n_out * (f.n_in + f.max_patches * math.log2(f.n_out))
    logic = (c["fc"] + c["fc_nt"] * f.n_t + c["xor"] + c["xor_term"] * term + c["xor_nout"] * f.n_out
             + c["bim"] + c["bim_nt"] * f.n_t + c["bim_ntr"] * (f.n_t * f.r))
    # One multiplier: a[row, plane] (unsigned, one more bit signed) by the slice's sum of n_t int8 terms.
    return logic, dsp_pieces(family, f.a_bits + 1, (f.term_bound * f.n_t).bit_length() + 1)


def _conv_logic(family: str, config: AcceleratorConfig) -> tuple[Logic, int]:
    p = config.conv
    c = LOGIC[family]
    fft = p.n * math.log2(p.n) / 24  # 1 at the calibrated N = 8
    # Each output channel in flight past the first adds an inverse path: an inverse FFT, and its IFFT input,
    # overlap-add and MAC drain (`conv_path`); its memories come with the elaborated design.
    logic = (c["fft"] + c["ifft"] * p.outs) * fft + c["mac"] + c["mac_lane"] * p.p + c["conv_rest"] \
        + c["conv_path"] * (p.outs - 1)
    return logic, conv_dsps(family, p)


def conv_dsps(family: str, p: SpectralConvParams) -> int:
    """DSP blocks of the conv engine `p` on `family`: the MAC's complex products (4 real ones per lane) and each
    inverse path's requantization (an unsigned multiplier); the FFTs' twiddles are shift-and-add."""
    spec = p.spec
    return (mac_multipliers(p.p) * dsp_pieces(family, spec.data_bits, spec.weight_bits)
            + dsp_pieces(family, p.overlap_add.ola_bits, spec.mult_bits + 1) * p.outs)


def _memory_logic(family: str, mem: Memory, mapping: Mapping) -> Logic:
    """The LUT4s and flip-flops a memory takes besides its RAM cells (module docstring)."""
    mux = MEMORY_LOGIC[family]["mux"]
    if mapping.kind == "logic":
        if mem.rom:
            return Logic(mem.width * mem.depth / MEMORY_LOGIC[family]["rom_bits"], 0, mem.width)
        return Logic(mem.width * (mem.depth - 1) * mux * mem.read_ports + mem.depth, ff_alone=mem.width * mem.depth)
    if mapping.kind == "distributed":
        # LUT RAM reads asynchronously: the read port's register is flip-flops, a read across rows a mux.
        return Logic((mapping.rows - 1) * mem.width * mux * mem.read_ports, 0, mem.width * mem.read_ports)
    return Logic()  # block RAM: the cells' chip selects and output registers do the rest


# --- the estimate ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One part's estimate, in the board's units: "logic" (LCs or LUT4s), "ff" (ECP5), "bram", "spram", "dsp"."""

    name: str
    use: dict[str, int]


@dataclass(frozen=True)
class Estimate:
    """A config's estimated use of its board, part by part (`parts`), against the board's budget."""

    board: str
    parts: tuple[Part, ...]

    @property
    def family(self) -> str:
        return get_board(self.board).family

    @property
    def resources(self) -> tuple[str, ...]:
        """The resources the family's budget counts, generic names ("logic", "bram", ...)."""
        return tuple(UNITS[self.family])

    def total(self, resource: str) -> int:
        return sum(part.use.get(resource, 0) for part in self.parts)

    def budget(self, resource: str) -> int:
        return get_board(self.board).budget.get(UNITS[self.family][resource], 0)

    def over(self) -> list[str]:
        """One line per resource the config needs more of than the board has (empty when it fits), naming the
        part that needs most when that part alone is over, e.g. "fc.xor region needs 212 EBR, icebreaker has 30"."""
        lines = []
        for resource in self.resources:
            need, have = self.total(resource), self.budget(resource)
            if need <= have:
                continue
            unit = UNIT_NAMES[self.family][resource]
            top = max(self.parts, key=lambda part: part.use.get(resource, 0))
            if top.use.get(resource, 0) > have:
                lines.append(f"{top.name} needs {top.use[resource]} {unit}, {self.board} has {have}")
            else:
                lines.append(f"{unit}: {need} needed (the most: {top.name} {top.use[resource]}), {self.board} has "
                             f"{have}")
        return lines

    @property
    def fits(self) -> bool:
        return not self.over()

    def close(self) -> list[str]:
        """One line per resource that fits, but by less than the estimate's tolerance: a build may not."""
        lines = []
        for resource in self.resources:
            need, have = self.total(resource), self.budget(resource)
            relative, absolute = TOLERANCE[resource]
            if need <= have < need + max(relative * need, absolute) and need:
                lines.append(f"{UNIT_NAMES[self.family][resource]} {need} of {have}: within the estimate's "
                             f"tolerance of the budget, a build may not fit")
        return lines

    def describe(self) -> dict[str, Any]:
        """JSON-able: board, per part its use, totals and budget under the board's resource names."""
        names = UNITS[self.family]
        return {"board": self.board,
                "parts": {part.name: {names[r]: part.use.get(r, 0) for r in self.resources} for part in self.parts},
                "total": {names[r]: self.total(r) for r in self.resources},
                "budget": {names[r]: self.budget(r) for r in self.resources},
                "tolerance": {names[r]: {"relative": TOLERANCE[r][0], "absolute": TOLERANCE[r][1]}
                              for r in self.resources},
                "fits": self.fits, "over": self.over(), "close": self.close()}

    def format(self) -> str:
        """A table: one row per part, the total, the budget and the share of it used."""
        units = UNIT_NAMES[self.family]
        head = f"  {'part':<22}" + "".join(f"{units[r]:>11}" for r in self.resources)
        rows = [head] + [f"  {part.name:<22}" + "".join(f"{part.use.get(r, 0):>11}" for r in self.resources)
                         for part in self.parts]
        rows.append(f"  {'total':<22}" + "".join(f"{self.total(r):>11}" for r in self.resources))
        rows.append(f"  {self.board:<22}" + "".join(f"{self.budget(r):>11}" for r in self.resources))
        rows.append(f"  {'used':<22}" + "".join(
            f"{100 * self.total(r) / self.budget(r):>10.0f}%" if self.budget(r) else f"{'-':>11}"
            for r in self.resources))
        rows.append("  tolerance of a build: " + ", ".join(
            f"{units[r]} ±{TOLERANCE[r][0]:.0%} (at least {TOLERANCE[r][1]})" if TOLERANCE[r][0]
            else f"{units[r]} ±{TOLERANCE[r][1]}" for r in self.resources))
        rows += [f"  over: {line}" for line in self.over()] + [f"  close: {line}" for line in self.close()]
        return "\n".join(rows)


def _part_of(path: tuple[str, ...], region_names: dict[str, str]) -> str:
    """The part a memory or SPRAM cell at `path` of the elaborated `UartAccelerator` belongs to."""
    if len(path) >= 3 and path[:2] == ("accelerator", "sequencer"):
        if path[2] in region_names:
            return f"{region_names[path[2]]} region"
        if path[2] == "fc":
            return "fc engine"
        if path[2] == "conv":  # with its post stages
            return "conv engine"
        return "sequencer"
    return "link"


@dataclass(frozen=True)
class PartCost:
    """One part before the family's packing: its logic as yosys synthesises it and its RAM cells, SPRAM and DSPs."""

    logic: Logic = Logic()
    bram: int = 0
    distributed: int = 0
    spram: int = 0
    dsp: int = 0


def part_costs(config: AcceleratorConfig) -> dict[str, PartCost]:
    """Each part of `config` (the link, the sequencer, each engine, each region) before packing."""
    family = get_board(config.board).family
    c = LOGIC[family]
    costs: dict[str, PartCost] = {"link": PartCost(c["link"])}
    if config.has_engines:
        costs["sequencer"] = PartCost(c["sequencer"] + c["sequencer_bit"] * sum(r.width for r in config.regions))
    if config.conv is not None:
        logic, dsp = _conv_logic(family, config)
        costs["conv engine"] = PartCost(logic, dsp=dsp)
    if config.fc is not None:
        logic, dsp = _fc_logic(family, config)
        costs["fc engine"] = PartCost(logic, dsp=dsp)
    region_names = {f"region_{r.name.replace('.', '_')}": r.name for r in config.regions}
    for region in config.regions:
        logic = Logic()
        if region.name != "program":  # every region but the program has a streamer
            logic += c["reader_bit"] * max(1, (region.depth - 1).bit_length())
        if region.name in config.spram_regions and family == "ice40":
            logic += c["spram_region"]
        costs[f"{region.name} region"] = PartCost(logic)
    mems, sprams = memories(config)
    for mem in mems:
        name = _part_of(mem.path, region_names)
        mapping = map_memory(family, mem)
        part = costs.get(name, PartCost())
        costs[name] = PartCost(part.logic + _memory_logic(family, mem, mapping),
                               part.bram + (mapping.cells if mapping.kind == "block" else 0),
                               part.distributed + (mapping.cells if mapping.kind == "distributed" else 0),
                               part.spram, part.dsp)
    for path in sprams:
        name = _part_of(path, region_names)
        part = costs[name]
        costs[name] = PartCost(part.logic, part.bram, part.distributed, part.spram + 1, part.dsp)
    return costs


def estimate(config: AcceleratorConfig) -> Estimate:
    """The resources `config` will take on its board (module docstring), part by part."""
    family = get_board(config.board).family
    pack = PACKING[family]
    parts = []
    for name, cost in part_costs(config).items():
        logic = cost.logic
        if family == "ice40":
            ff = pack["ff_link"] if name == "link" else pack["ff"]
            use = {"logic": logic.lut + logic.carry * pack["carry"] + logic.ff * ff + logic.ff_alone}
        else:
            use = {"logic": logic.lut + cost.distributed * pack["distributed"], "ff": logic.ff + logic.ff_alone}
        use.update({"bram": cost.bram, "spram": cost.spram, "dsp": cost.dsp})
        parts.append(Part(name, {r: round(use[r]) for r in UNITS[family]}))
    return Estimate(config.board, tuple(parts))


__all__ = ["UNITS", "UNIT_NAMES", "TOLERANCE", "RamCell", "RAM_CELLS", "Memory", "Mapping", "map_memory", "memories",
           "Logic", "LOGIC", "PACKING", "dsp_pieces", "conv_dsps", "PartCost", "part_costs", "Part", "Estimate",
           "estimate"]
