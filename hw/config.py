"""One config describes one accelerator instance: the board, the link, its engines and their memories.

`AcceleratorConfig.describe()` is the single source of what the device says about itself: the INFO
response's JSON is built from it at elaboration, and `hw.build` writes the same document into
`manifest.json`, so the host never guesses.

A config without engines (the default) is the link alone: INFO and ECHO. With an engine (the SPEC2 conv
engine, the FC engine, or both) it also has the on-chip regions the host fills with LOAD (the layer program,
two activation buffers, each engine's weight streams), the layer descriptor layout the sequencer runs
(`hw.sequencer`), and with the conv engine its post stage (crop, pool). Named configs live in `CONFIGS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from amaranth.lib import data

from boards import DEFAULT_BOARD, get_board
from hw.spec.fc_format import DEFAULT_FC_FORMAT, FC16_FORMAT
from hw.spec.params import check_int, check_ints
from hw.spec.protocol import (
    DEFAULT_FRAME_TIMEOUT_MS,
    LEN_FIELD_MAX,
    LOAD_HEADER_BYTES,
    PROTOCOL_VERSION,
    sqgen_version,
)

from .clocking import Ecp5PllParams
from .fc_engine import FcEngineParams
from .layouts import fields_json
from .memory import SPRAM_DEPTH, SpramParams
from .spectral.pipeline import SpectralConvParams

#: A UART bit must last at least this many clock cycles for the receiver's mid-bit sampling to work.
MIN_CYCLES_PER_BIT = 4
#: Cycles a RUN's layer may go without progress before the sequencer aborts it (STALLED). A layer whose
#: descriptor is consistent is never that quiet: its longest gap between handshakes is
#: `AcceleratorConfig.longest_quiet_cycles`, about 4 500 cycles on `lenet5` (the FFT, MAC and IFFT latencies,
#: 219 cycles, and three tile rows of the widest map at the largest group count, 3 x 7 x 204) and under 40 for an
#: FC layer (its decoder, unpacker and accumulator pipelines). 2^20 is over 200 times that, still only 42 ms
#: at 25 MHz (87 ms at 12 MHz), far below the host's least wait for an answer.
DEFAULT_WATCHDOG_CYCLES = 1 << 20
#: The watchdog's largest setting: as many cycles as the RUN answer's u32 counts.
MAX_WATCHDOG_CYCLES = (1 << 32) - 1

#: Region ids (the LOAD command's first byte). Fixed, so they mean the same on every config that has the region.
REGION_IDS = {"program": 0, "act0": 1, "act1": 2, "conv.w": 3, "conv.quant": 4, "fc.xor": 5, "fc.bim": 6,
              "fc.scale": 7}
#: Descriptor `kind` values; a device answers BAD_ARGUMENT for the kind of an engine it does not have.
KINDS = {"conv": 0, "fc": 1}
#: Largest region depth: LOAD offsets and READ offsets and lengths are u16.
MAX_DEPTH = 1 << 16


@dataclass(frozen=True)
class Region:
    """One LOAD-able on-chip memory: its id, name, word shape (beat width in bits) and depth in words."""

    id: int
    name: str
    width: int
    depth: int

    @property
    def beat_bytes(self) -> int:
        """Bytes one word takes in a LOAD payload (little-endian, the top bits above `width` ignored)."""
        return (self.width + 7) // 8

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.width, "bytes": self.beat_bytes,
                "depth": self.depth}


#: Cycles a RUN spends on each descriptor besides its engine's work: the sequencer's FETCH, DESC and CHECK_DESC
#: states, the streamers' first read, the writer's register and LAYER's registered end (`hw.sequencer`).
LAYER_OVERHEAD_CYCLES = 6

#: Output channels the conv engine of `lenet5`, and of a config derived for a network where the board has room, has in
#: flight (`SpectralConvParams.outs`): LeNet's layers have 3 to 15 kernel groups a channel and tile against the
#: inverse FFT's 64 cycles, so each inverse path (about 6 500 LUT4 on the ECP5) takes a share of what that period
#: bounds: one to six paths take LeNet-5 to 39 280, 20 953, 16 104, 13 459, 13 664 and 12 427 cycles an image by the
#: cycle models (`host.accel`'s, each layer behind the one before in one RUN, each path cropping and pooling its
#: maps). Five paths still take conv1's six channels in two blocks; six take them in one, at about 13 000 LUT4 more
#: than four.
CONV_OUTS = 4

#: The LeNet-5 accelerator's clock on ECP5 boards, made by the PLL from the ULX3S's 25 MHz (x2): built for it
#: (seed 1, static placer, router1, the YoWASP tools pyproject.toml pins) the design with four inverse paths reaches
#: 55.3 MHz (docs/figures/build-lenet5.json; its critical path the IFFT input's shift by mac_shift; 52.4 and 56.8
#: on earlier builds of much the same logic: the placer's outcome moves it by a few MHz). Built for 55 MHz (an
#: earlier design), router1 still had 100 000 of its 194 000 arcs to route after 43 minutes, against 25 for all of
#: them at 50: more than a test run can wait.
LENET5_ECP5_CLOCK_HZ = 50_000_000


@dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one accelerator build; validated on construction."""

    board: str = DEFAULT_BOARD
    #: The clock the design runs at (Hz): None, the board's oscillator; another frequency is made by a PLL
    #: (`hw.clocking`, ECP5 boards), which must reach it exactly.
    clock_hz: int | None = None
    baud: int = 115_200
    #: Largest request payload the device accepts (bytes); sizes the payload buffer.
    max_payload: int = 1024
    #: A frame whose next byte does not arrive within this time is dropped and the parser resyncs.
    frame_timeout_ms: float = DEFAULT_FRAME_TIMEOUT_MS
    #: Blocks present and their parameters (name -> parameter dict); none yet.
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The SPEC2 conv engine, or None. It must be elaborated with "same" padding to run "valid" layers too
    #: (as crops of the "same" output), and its activations must be the buffers' int8.
    conv: SpectralConvParams | None = None
    #: The FC engine (`hw.fc_engine`, descriptor kind "fc"), or None. Built with `FcEngineParams.from_format`, so
    #: INFO can name the `FcFormat` its models must have.
    fc: FcEngineParams | None = None
    #: Words of each activation buffer (int8): the largest map a layer reads or writes.
    act_depth: int = 4096
    #: Layer descriptors the program region holds.
    program_depth: int = 16
    #: Words of the conv engine's kernel-group region and quantization region.
    conv_w_depth: int = 512
    conv_quant_depth: int = 32
    #: Words of the FC engine's regions: XOR decoder beats, BIM unpacker beats, scale beats (one per row).
    fc_xor_depth: int = 2048
    fc_bim_depth: int = 2048
    fc_scale_depth: int = 256
    #: Regions held in single-port SPRAM (`hw.memory.SpramMemory`: SB_SPRAM256KA lanes on iCE40, a behavioural
    #: model of them in simulation, a `Memory` on other FPGAs) instead of a `Memory`. Not part of INFO.
    spram_regions: tuple[str, ...] = ()
    #: A RUN's layer that goes this many cycles without a handshake on its streams or an activation write is
    #: aborted and the RUN answered STALLED (`hw.sequencer`); at least twice `longest_quiet_cycles`.
    watchdog_cycles: int = DEFAULT_WATCHDOG_CYCLES

    def __post_init__(self) -> None:
        board = get_board(self.board)  # raises with the list of known boards
        if self.clock_hz is None:
            object.__setattr__(self, "clock_hz", board.clock_hz)
        elif self.clock_hz != board.clock_hz and board.family != "ecp5":
            raise ValueError(f"clock_hz must be the {board.name}'s oscillator, {board.clock_hz} Hz (sqgen makes "
                             f"other clocks with the ECP5 PLL only), got {self.clock_hz}")
        object.__setattr__(self, "clock_hz", check_int("clock_hz", self.clock_hz, 1))
        if self.clock_hz != board.clock_hz:
            Ecp5PllParams.for_frequency(board.clock_hz, self.clock_hz)  # one line naming the reachable ones
        if not 1 <= self.max_payload <= LEN_FIELD_MAX:
            raise ValueError(f"max_payload must be in 1..{LEN_FIELD_MAX}, got {self.max_payload}")
        top_baud = self.clock_hz // MIN_CYCLES_PER_BIT
        if not 1200 <= self.baud <= top_baud:
            raise ValueError(f"baud must be in 1200..{top_baud} for a {self.clock_hz} Hz clock, got {self.baud}")
        if not 0.01 <= self.frame_timeout_ms <= 10_000:
            raise ValueError(f"frame_timeout_ms must be in 0.01..10000, got {self.frame_timeout_ms}")
        if self.conv is not None and not isinstance(self.conv, SpectralConvParams):
            raise ValueError(f"conv must be a SpectralConvParams or None, got {type(self.conv).__name__}")
        if self.fc is not None and not isinstance(self.fc, FcEngineParams):
            raise ValueError(f"fc must be an FcEngineParams or None, got {type(self.fc).__name__}")
        if self.fc is not None and self.fc.seed is None:
            raise ValueError("fc must be built with FcEngineParams.from_format (INFO names its FcFormat)")
        depths = ("act_depth", "program_depth", "conv_w_depth", "conv_quant_depth", "fc_xor_depth", "fc_bim_depth",
                  "fc_scale_depth")
        check_ints(self, ((name, 1, MAX_DEPTH) for name in depths))
        if self.conv is not None:
            spec = self.conv.spec
            if spec.act_bits != 8 or spec.out_bits != 8:
                raise ValueError(f"conv.spec act_bits and out_bits must be 8 (the activation buffers are int8), "
                                 f"got {spec.act_bits} and {spec.out_bits}")
            if self.conv.padding != "same":
                raise ValueError(f"conv.padding must be 'same' ('valid' layers run as crops of it), "
                                 f"got {self.conv.padding!r}")
            if min(self.conv.max_height, self.conv.max_width) < 2:
                raise ValueError("conv.max_height and conv.max_width must be at least 2 (the pool's window)")
            # The accelerator's engine crops and pools behind each inverse path (the descriptor's `post`).
            object.__setattr__(self, "conv", replace(self.conv, post=True))
        if self.fc is not None:
            for name in ("max_rows", "max_cols"):
                if getattr(self.fc, name) > self.act_depth:
                    raise ValueError(f"fc.{name} must be at most act_depth={self.act_depth} (a layer's vector sits "
                                     f"in one activation buffer), got {getattr(self.fc, name)}")
        if self.has_engines:
            # One LOAD frame must carry at least one beat of every region, and READ's five argument bytes.
            need = LOAD_HEADER_BYTES + max(r.beat_bytes for r in self.regions)
            if self.max_payload < need:
                raise ValueError(f"max_payload must be at least {need} (a LOAD of one beat of the widest region), "
                                 f"got {self.max_payload}")
        object.__setattr__(self, "watchdog_cycles", check_int(
            "watchdog_cycles", self.watchdog_cycles, 2 * self.longest_quiet_cycles, MAX_WATCHDOG_CYCLES,
            what=" (at least twice longest_quiet_cycles, the longest gap of a good layer)"))
        self._check_spram_regions()

    def _check_spram_regions(self) -> None:
        names = self.spram_regions
        if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            raise ValueError(f"spram_regions must be a tuple of distinct region names, got {names!r}")
        regions = {r.name: r for r in self.regions}
        lanes = 0
        for name in names:
            if name not in regions:
                raise ValueError(f"spram_regions: no region {name!r}; this config has {sorted(regions)}")
            if regions[name].depth > SPRAM_DEPTH:
                raise ValueError(f"spram_regions: region {name!r} has {regions[name].depth} words, an SPRAM "
                                 f"{SPRAM_DEPTH}")
            lanes += SpramParams(regions[name].width, regions[name].depth).lanes
        board = get_board(self.board)
        if board.family == "ice40" and lanes > board.budget.get("ICESTORM_SPRAM", 0):
            raise ValueError(f"spram_regions need {lanes} SPRAM cells (one per 16 bits of a word), {board.name} "
                             f"has {board.budget.get('ICESTORM_SPRAM', 0)}")

    @property
    def longest_quiet_cycles(self) -> int:
        """The most cycles a layer with a consistent descriptor goes without a handshake on its streams (an upper
        bound; 1 without engines).

        Conv: after the last x beat the tiler's last band of tiles (a tile row of N^2 each) and the forward FFT
        pass before the MAC starts, then a tile row's MAC work (max(groups, N^2) a tile) and the MAC drain,
        inverse FFT and one tile's output before overlap-add releases a row; between an output channel's rows
        and into the next channel it is at most one tile row plus those latencies. Counted with the widest map,
        the largest group count and every latency, plus a tile row for the paths' post stages (the rows they drop,
        a crop's top or a pool's odd row, give no output) and a few cycles. FC: in its load and
        compute phases x, scale, xor or bim beats move every few cycles; the longest gap is the drain after the
        last slice (the decoder's, unpacker's and accumulator's pipelines) and the output's stages.
        """
        quiet = 1
        if self.conv is not None:
            c = self.conv
            tile_row = -(-c.max_width // c.l) * max(c.max_groups, c.n ** 2)
            quiet = max(quiet, 3 * tile_row + c.latency + 8)
        if self.fc is not None:
            f = self.fc
            quiet = max(quiet, f.xor.latency + f.bim.latency + f.latency + 8)
        return quiet

    @classmethod
    def lenet5(cls, **overrides: Any) -> AcceleratorConfig:
        """The whole LeNet-5: SPEC2 N=8, K=5, L=4 "same" with ReLU, P=4, B=8, four output channels in flight, up to
        6 -> 16 channels on 28 x 28, and the FC engine of `DEFAULT_FC_FORMAT` for layers of up to 120 x 400.

        The activation buffers hold 6 x 28 x 28 (conv1's map before pooling, so a layer may also run without
        it). The conv regions hold `models/lenet5_spec2.npz`'s layers (265 kernel groups, 22 quant beats), the FC
        regions `models/lenet5_full.npz`'s three 1-plane layers (1200 XOR beats, 1158 BIM beats, 214 rows), each
        with room for a denser retraining or a second plane.
        """
        conv = SpectralConvParams(n=8, k=5, l=4, padding="same", relu=True, p=4, b=8, max_c_in=6, max_c_out=16,
                               max_height=28, max_width=28, outs=CONV_OUTS)
        if get_board(overrides.get("board", DEFAULT_BOARD)).family == "ecp5":
            overrides = {"clock_hz": LENET5_ECP5_CLOCK_HZ, **overrides}
        fc = FcEngineParams.from_format(DEFAULT_FC_FORMAT, max_rows=120, max_cols=400)
        return cls(**{"conv": conv, "fc": fc, "act_depth": 6 * 28 * 28, "program_depth": 16, "conv_w_depth": 512,
                      "conv_quant_depth": 32, "fc_xor_depth": 2560, "fc_bim_depth": 2560, "fc_scale_depth": 256,
                      **overrides})

    @classmethod
    def fc_only(cls, **overrides: Any) -> AcceleratorConfig:
        """LeNet-5's FC part alone on the iCEBreaker: the FC engine of `FC16_FORMAT` for layers of up to 120 x 400,
        running `models/lenet5_fc16.npz`'s fc1 -> fc2 -> fc3 (LeNet-5 compressed for that format) on the 400 pooled
        conv2 codes.

        What fits the UP5K (5 280 LCs, 30 EBR, 4 SPRAM): `FC16_FORMAT`'s 16-wide slices (the default's 64-wide
        activation word alone took 32 EBR), one plane (48-bit scale beats), x written lane by lane
        (`FcEngineParams.x_lane_writes`), fc.xor (14 bits, 4 196 words used) and fc.bim (23 bits, 4 166 words) in
        SPRAM (1 + 2 lanes, 8 192 words each: room for a model twice as dense), the other regions just deep enough
        (214 scale rows, 3 descriptors). `python -m hw.build --config fc_only` (nextpnr seed 1): 4 766 LCs (90 %),
        25 EBR, 3 SPRAM, 1 DSP, Fmax 20.9 MHz against the 12 MHz clock (seeds 2, 3: 21.2, 21.1 MHz).
        """
        fc = FcEngineParams.from_format(FC16_FORMAT, max_rows=120, max_cols=400, x_lane_writes=True)
        return cls(**{"board": "icebreaker", "fc": fc, "act_depth": 400, "program_depth": 3, "fc_xor_depth": 8192,
                      "fc_bim_depth": 8192, "fc_scale_depth": 214, "spram_regions": ("fc.xor", "fc.bim"),
                      **overrides})

    # --- engines, regions, descriptors (only meaningful with an engine) --------------------------------------
    @property
    def has_engines(self) -> bool:
        return self.conv is not None or self.fc is not None

    @property
    def regions(self) -> list[Region]:
        """Every LOAD-able region of this config, by id."""
        if not self.has_engines:
            return []
        out = [Region(REGION_IDS["program"], "program", self.descriptor_layout.size, self.program_depth),
               Region(REGION_IDS["act0"], "act0", 8, self.act_depth),
               Region(REGION_IDS["act1"], "act1", 8, self.act_depth)]
        if self.conv is not None:
            out += [Region(REGION_IDS["conv.w"], "conv.w", self.conv.kernel_layout.size, self.conv_w_depth),
                    Region(REGION_IDS["conv.quant"], "conv.quant", self.conv.quant_layout.size,
                           self.conv_quant_depth)]
        if self.fc is not None:
            f = self.fc
            out += [Region(REGION_IDS["fc.xor"], "fc.xor", f.xor.beat_layout.size, self.fc_xor_depth),
                    Region(REGION_IDS["fc.bim"], "fc.bim", f.bim.beat_layout.size, self.fc_bim_depth),
                    Region(REGION_IDS["fc.scale"], "fc.scale", f.scale_layout.size, self.fc_scale_depth)]
        return out

    def region(self, name: str) -> Region:
        """The region called `name`; KeyError naming the known ones otherwise."""
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(f"no region {name!r}; this config has {[r.name for r in self.regions]}")

    @property
    def descriptor_layout(self) -> data.StructLayout:
        """One program word: a layer's kind, buffers, counts, engine settings and post stage (fields from the LSB).

        kind: `KINDS`. src: the activation buffer read (0 = act0, 1 = act1); the output goes to the other one.
        x_count: activations read from src (from address 0). out_count: activations written to the other
        buffer (from address 0); the layer ends when they have been written. conv.cfg: the engine's cfg beat.
        conv.w_start/w_count, conv.quant_start/quant_count: the words of its regions streamed. post: the crop
        window (top, left, height, width) of the engine's output and the pool flag (2 x 2 max-pool after it).
        fc.cfg: the FC engine's cfg beat; fc.xor_start/xor_count, fc.bim_start/bim_count, fc.scale_start/
        scale_count: the words of its regions streamed. Each engine's fields exist only with that engine, and
        the conv fields keep their offsets when the FC engine is added (its fields come after them).
        """
        act = range(self.act_depth + 1)
        fields: dict[str, Any] = {"kind": 1, "src": 1, "x_count": act, "out_count": act}
        if self.conv is not None:
            c = self.conv
            fields["conv"] = data.StructLayout({
                "cfg": c.cfg_layout,
                "w_start": range(self.conv_w_depth), "w_count": range(self.conv_w_depth + 1),
                "quant_start": range(self.conv_quant_depth), "quant_count": range(self.conv_quant_depth + 1),
            })
            fields["post"] = c.window_layout
        if self.fc is not None:
            fields["fc"] = data.StructLayout({
                "cfg": self.fc.cfg_layout,
                "xor_start": range(self.fc_xor_depth), "xor_count": range(self.fc_xor_depth + 1),
                "bim_start": range(self.fc_bim_depth), "bim_count": range(self.fc_bim_depth + 1),
                "scale_start": range(self.fc_scale_depth), "scale_count": range(self.fc_scale_depth + 1),
            })
        return data.StructLayout(fields)

    @property
    def pll(self) -> Ecp5PllParams | None:
        """The PLL that makes `clock_hz` from the board's oscillator, or None when the design runs at it."""
        oscillator = get_board(self.board).clock_hz
        return None if self.clock_hz == oscillator else Ecp5PllParams.for_frequency(oscillator, self.clock_hz)

    @property
    def uart_divisor(self) -> int:
        """Clock cycles per UART bit, rounded to nearest."""
        return round(self.clock_hz / self.baud)

    @property
    def frame_timeout_cycles(self) -> int:
        return max(1, round(self.frame_timeout_ms * 1e-3 * self.clock_hz))

    def describe(self) -> dict[str, Any]:
        """What the device reports about itself (INFO payload and manifest.json).

        With an engine it adds `regions` (id, name, beat width and bytes, depth), `buffers` (READ's buffer ids),
        `engines` (each one's parameters and the field tables of its stream beats; the FC engine also its
        `format`, the `FcFormat` fields a model file must carry), `post` (crop and pool parameters, with the
        conv engine) and `descriptor` (its field table, size, kinds), enough to build every LOAD and RUN.
        """
        out: dict[str, Any] = {
            "sqgen": sqgen_version(),
            "protocol": PROTOCOL_VERSION,
            "board": self.board,
            "clock_hz": self.clock_hz,
            "baud": self.baud,
            "max_payload": self.max_payload,
            "blocks": self.blocks,
        }
        if not self.has_engines:
            # The link-only device with the default frame timeout says exactly what it always said; the host
            # takes DEFAULT_FRAME_TIMEOUT_MS when INFO gives none.
            if self.frame_timeout_ms != DEFAULT_FRAME_TIMEOUT_MS:
                out["frame_timeout_ms"] = self.frame_timeout_ms
            return out
        out.update(frame_timeout_ms=self.frame_timeout_ms, watchdog_cycles=self.watchdog_cycles)
        engines: dict[str, Any] = {}
        if self.conv is not None:
            c = self.conv
            engines["conv"] = {"kind": KINDS["conv"], "params": c.describe(), "streams": {
                "cfg": fields_json(c.cfg_layout), "w": fields_json(c.kernel_layout),
                "quant": fields_json(c.quant_layout)}}
        if self.fc is not None:
            f = self.fc
            engines["fc"] = {"kind": KINDS["fc"], "params": f.describe(),
                             "format": {name: int(v) for name, v in f.fc_format.fields().items()},
                             "streams": {"cfg": fields_json(f.cfg_layout), "scale": fields_json(f.scale_layout),
                                         "xor": fields_json(f.xor.beat_layout), "bim": fields_json(f.bim.beat_layout)}}
        layout = self.descriptor_layout
        post = {}
        if self.conv is not None:  # one post stage behind each inverse path
            stage = self.conv.post_stage
            post = {"post": {"crop": stage.crop.describe(), "pool": stage.pool.describe(), "stages": self.conv.outs}}
        return {**out, "regions": [r.describe() for r in self.regions], "buffers": {"act0": 0, "act1": 1},
                "engines": engines, **post,
                "descriptor": {"width": layout.size, "bytes": (layout.size + 7) // 8, "kinds": KINDS,
                               "fields": fields_json(layout), "overhead_cycles": LAYER_OVERHEAD_CYCLES}}

    def info_json(self) -> bytes:
        """The INFO response payload: `describe()` as compact JSON."""
        return json.dumps(self.describe(), separators=(",", ":"), sort_keys=True).encode()


#: Named configs (`AcceleratorConfig.<name>()` factories): "link" is the default link-only device.
CONFIGS = {"link": AcceleratorConfig, "lenet5": AcceleratorConfig.lenet5, "fc_only": AcceleratorConfig.fc_only}
#: What `python -m hw.build` builds with no arguments: the whole LeNet-5 on the ULX3S-85F.
DEFAULT_CONFIG = "lenet5"
