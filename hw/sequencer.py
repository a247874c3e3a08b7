"""The accelerator's memories and layer sequencer: what LOAD, RUN and READ do.

`Sequencer` owns the regions of an `AcceleratorConfig` (one `Memory` each, or an `hw.memory.SpramMemory` for the
config's `spram_regions`: the program of layer descriptors, the int8 activation buffers act0 and act1, each
engine's weight streams) and the engines the config has. `hw.top.Accelerator`
hands it a LOAD, RUN or READ request whose payload sits in the frame buffer; the sequencer reads its arguments
from there, checks them, does the work and answers through the frame transmitter.

Kind "conv" (the SPEC2 engine, `SpectralConv`, with its post stage, a crop and a pool or none behind each of its
inverse paths):

    act[src] ─ RegionReader ─ x ─┐
    conv.w   ─ RegionReader ─ w ─ SpectralConv (post) ─ o ─ writer ─ act[1 - src]
    conv.quant ─ RegionReader ──┘   ↑ cfg, post
                                    descriptor (program[layer])

Kind "fc" (`FcEngine`; no post stage):

    act[src] ─ RegionReader ─ x ─────┐
    fc.scale ─ RegionReader ─ scale ─┤
    fc.xor   ─ RegionReader ─ xor ───┼─ FcEngine ─ o ─ writer ─ act[1 - src]
    fc.bim   ─ RegionReader ─ bim ───┘   ↑ cfg

A RUN fetches descriptors first..first+count-1 one after the other. For each it checks the kind (one of an
engine the config has) and the ranges, starts the kind's streamers (x from address 0, the weight regions from
the descriptor's starts), sends the kind's cfg beats (conv: the engine's cfg and post beats; fc: the engine's cfg)
and writes the results to the other buffer from address 0. The layer is over when out_count values have been
written, every cfg beat has been taken and every streamer has handed over its words (and, for conv, the engine's
post stages have let their last samples go: a pool drops an odd last row after its final output). Each layer
reads what the one before wrote, so layers run one after the other, with one overlap: a layer behind a conv layer
starts its x streamer and its engine cfg beat (an FC layer also its weight streamers) while the conv layer still
computes (`_prefetch`), its x held at each word until that word has been written, so that its engine loads the
layer's input as the layer before produces it (the conv engine's spectrum buffer is double; the FC engine is idle
meanwhile) rather than after. The answer carries the cycles from the first fetch to the last layer's end.

A descriptor whose counts disagree with its engine's cfg stops making progress instead. A watchdog counts the
cycles of a layer without a handshake on any of its streams (the streamers' beats, the cfg beats, the engine's
output, the writer); at the config's `watchdog_cycles` the layer is aborted and the RUN
answered STALLED with the layer's index, what it was waiting for (`hw.spec.protocol.Waiting`) and the cycles so
far. The abort resets every engine and every streamer through `ResetInserter`: their registers
go back to their initial values the cycle after (the reset is registered, for it reaches thousands of
flip-flops; the sequencer has stopped the layer's writes and cfg beats by then), as after power-up, with no abort
logic inside them (and their memories, written before they are read in every layer, keep stale words that no one
reads). The next request is served normally.

The FC engine's bim region holds each layer's canonical stream over all its planes' tiles
(`hw.spec.fc_stream.layer_streams`), so every region is streamed once per layer, in order.
"""

from __future__ import annotations

from typing import Any

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.spec.protocol import (
    LOAD_HEADER_BYTES,
    READ_PAYLOAD_BYTES,
    RUN_PAYLOAD_BYTES,
    STALLED_PAYLOAD_BYTES,
    Command,
    Status,
    Waiting,
)

from .config import KINDS, REGION_IDS, AcceleratorConfig
from .fc_engine import FcEngine
from .link import Response
from .memory import RegionReader, SpramMemory, SpramParams
from .spectral.pipeline import SpectralConv

#: Bytes of the RUN answer: the cycle count, u32 little-endian.
CYCLE_BYTES = 4


class _State:
    """The signals the steps of `Sequencer.elaborate` share: the command and its arguments, LOAD's beat
    gathering, RUN's layer and descriptor, and the regions and engines once they are built."""

    def __init__(self, cfg: AcceleratorConfig):
        regions = cfg.regions
        # --- the command ------------------------------------------------------------------------------------------
        self.command = Signal(8)
        self.length = Signal(16)
        self.args = Signal(8 * READ_PAYLOAD_BYTES)  # the first payload bytes, little-endian; the views below
        self.arg_byte = Signal(range(READ_PAYLOAD_BYTES + 1))
        self.status = Signal(8)
        self.resp_length = Signal(16)
        self.source = Signal(range(3))  # answer payload: 0 act0, 1 act1, 2 RUN's (`run_answer` from `sent` on)
        self.sent = Signal(range(STALLED_PAYLOAD_BYTES))
        self.programmed = Signal(range(cfg.program_depth + 1))  # program words loaded so far (RUN's bound)
        self.region_id, self.offset = self.args[0:8], self.args[8:24]  # LOAD
        self.first, self.count = self.args[0:8], self.args[8:16]  # RUN
        self.buffer_id, self.read_length = self.args[0:8], self.args[24:40]  # READ

        # --- LOAD --------------------------------------------------------------------------------------------------
        # The region, decoded once: bytes per beat, depth, id known.
        self.sel_bytes = Signal(range(max(r.beat_bytes for r in regions) + 1))
        self.sel_depth = Signal(range(max(r.depth for r in regions) + 1))
        self.sel_known = Signal()
        # The beat count, by repeated subtraction (a divider by a run-time constant is not worth its logic: a
        # frame takes far longer on the link than these max_payload cycles at most).
        self.remainder = Signal(16)
        self.beats = Signal(17)
        # The writer: payload bytes (read one cycle after addressing) gathered into a beat, then written.
        max_bytes = max(r.beat_bytes for r in regions)
        self.beat = Signal(8 * max_bytes)
        self.read_addr = Signal(16)
        self.got = Signal()  # buf_data holds the byte addressed last cycle
        self.byte_in_beat = Signal(range(max_bytes))
        self.full = Signal()  # `beat` is complete: write it this cycle
        self.write_addr = Signal(17)
        self.load_we = Signal()

        # --- RUN ---------------------------------------------------------------------------------------------------
        self.layer = Signal(8)
        self.layers_left = Signal(8)
        self.cycles = Signal(8 * CYCLE_BYTES)
        self.counting = Signal()
        self.desc = Signal(cfg.descriptor_layout)
        self.running = Signal()  # a layer's datapath is live
        self.written = Signal(range(cfg.act_depth + 1))
        self.conv_cfg_pending = Signal()
        self.post_cfg_pending = Signal()
        self.fc_cfg_pending = Signal()
        self.layer_start = Signal()
        self.is_conv = Signal()
        self.is_fc = Signal()
        # A layer behind a conv layer starts loading before that one has finished (`_prefetch`): its x streamer
        # (`x_src`, to the FC engine when `x_fc`), its engine cfg beat and, for an FC layer, its weight streamers go
        # early, the x streamer held behind the writer while `x_gate`.
        self.in_layer = Signal()  # LAYER's second cycle on: the program port holds the next descriptor
        self.prefetched = Signal()  # the next layer's x and engine cfg have started
        self.x_gate = Signal()
        self.x_src = Signal()  # the activation buffer the engine's x comes from
        self.x_fc = Signal()  # the FC engine takes x (else the conv engine)
        self.conv_cfg_beat = Signal(cfg.conv.cfg_layout) if cfg.conv is not None else None
        self.fc_cfg_beat = Signal(cfg.fc.cfg_layout) if cfg.fc is not None else None
        # The watchdog: cycles of the running layer without progress; at watchdog_cycles `abort` resets the
        # datapath, and `waiting` keeps what the layer was waiting for.
        self.quiet = Signal(range(cfg.watchdog_cycles + 1))
        self.abort = Signal()
        # The abort registered: it fans out to every register of the datapath, so it starts at a flip-flop rather
        # than behind the watchdog's and the layer's end comparisons (the build's critical path when it did not).
        self.reset = Signal()
        self.waiting = Signal(8)
        # RUN's answer payload: STALLED sends all of it, OK only the cycle count (from byte 2).
        self.run_answer = Cat(self.layer, self.waiting, self.cycles)

        # Set by `Sequencer._add_regions` and `Sequencer._add_engines`.
        self.writes: dict[str, Any] = {}
        self.reads: dict[str, Any] = {}
        self.streamers: dict[str, RegionReader] = {}
        self.conv: SpectralConv | None = None
        self.fc: FcEngine | None = None

    @property
    def acts(self) -> list[RegionReader]:
        """The streamers of act0 and act1: a layer's x, or READ's answer."""
        return [self.streamers["act0"], self.streamers["act1"]]


def _answer(m: Module, s: _State, code: Status, size: Any = 0) -> None:
    """Leave for RESPOND with `code` and an answer payload of `size` bytes."""
    m.d.sync += [s.status.eq(code), s.resp_length.eq(size)]
    m.next = "RESPOND"


class Sequencer(wiring.Component):
    """Regions, engines and the LOAD / RUN / READ commands of an accelerator with engines.

    * `start` (one-cycle pulse) with `command` and `length` (the request's payload bytes): begin a command.
      `busy` goes high on the next cycle and low once the answer's last byte has gone to the transmitter.
    * `buf_addr`, `buf_en`, `buf_data`: a synchronous read port of the frame buffer holding the payload.
    * `response` (`hw.link.Response`), `payload` (bytes): the answer, to `FrameTransmitter`.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig) or not config.has_engines:
            raise ValueError("Sequencer needs an AcceleratorConfig with an engine (conv or fc)")
        self.config = config
        super().__init__({
            "start": In(1), "command": In(8), "length": In(16), "busy": Out(1),
            "buf_addr": Out(range(config.max_payload)), "buf_en": Out(1), "buf_data": In(8),
            "response": Out(stream.Signature(Response)), "payload": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        s = _State(self.config)
        self._add_regions(m, s)
        self._add_engines(m, s)
        self._decode_load_region(m, s)
        self._decode_kind(m, s)
        with m.If(s.counting):
            m.d.sync += s.cycles.eq(s.cycles + 1)

        m.d.comb += [self.response.payload.status.eq(s.status), self.response.payload.length.eq(s.resp_length)]
        with m.FSM() as fsm:
            self._accept_states(m, s)
            self._load_states(m, s)
            self._run_states(m, s)
            self._answer_states(m, s)
        self._load_writes(m, s)

        self._layer_inputs(m, s)
        result_valid, result = self._layer_outputs(m, s)
        self._layer_writes(m, s, result_valid, result)
        self._watchdog(m, s, result_valid)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

    # --- regions and engines ---------------------------------------------------------------------------------------
    def _add_regions(self, m: Module, s: _State) -> None:
        """One memory per region (SPRAM for the config's `spram_regions`), a streamer per region but the program."""
        cfg = self.config
        for region in cfg.regions:
            name, key = region.name, region.name.replace(".", "_")
            if name in cfg.spram_regions:
                # Same ports, one single-port RAM: LOAD's writes and the streamer's reads never share a cycle.
                m.submodules[f"region_{key}"] = spram = SpramMemory(SpramParams(region.width, region.depth))
                s.writes[name], s.reads[name] = spram.write, spram.read
            else:
                m.submodules[f"region_{key}"] = mem = Memory(shape=region.width, depth=region.depth, init=[])
                s.writes[name], s.reads[name] = mem.write_port(), mem.read_port()
        for region in (r for r in cfg.regions if r.name != "program"):
            read = s.reads[region.name]
            streamer = s.streamers[region.name] = RegionReader(region.width, region.depth)
            m.submodules[f"read_{region.name.replace('.', '_')}"] = ResetInserter(s.reset)(streamer)
            m.d.comb += [read.addr.eq(streamer.addr), read.en.eq(streamer.en), streamer.data.eq(read.data)]

    def _add_engines(self, m: Module, s: _State) -> None:
        """The config's engines (the conv engine with its post stages). An abort resets them all."""
        if self.config.conv is not None:
            s.conv = SpectralConv(self.config.conv)
            m.submodules.conv = ResetInserter(s.reset)(s.conv)
        if self.config.fc is not None:
            s.fc = FcEngine(self.config.fc)
            m.submodules.fc = ResetInserter(s.reset)(s.fc)

    def _decode_load_region(self, m: Module, s: _State) -> None:
        """LOAD's region id to its bytes per beat and depth, and whether the id is known."""
        with m.Switch(s.region_id):
            for region in self.config.regions:
                with m.Case(region.id):
                    m.d.comb += [s.sel_bytes.eq(region.beat_bytes), s.sel_depth.eq(region.depth), s.sel_known.eq(1)]

    def _decode_kind(self, m: Module, s: _State) -> None:
        """The descriptor's kind: only a kind of an engine this config has gets past CHECK_DESC, so with one
        engine the other kind's flag is a constant 0 and its logic disappears."""
        if self.config.conv is not None:
            m.d.comb += s.is_conv.eq(s.desc.kind == KINDS["conv"])
        if self.config.fc is not None:
            m.d.comb += s.is_fc.eq(s.desc.kind == KINDS["fc"])

    # --- the command: its arguments and their checks ---------------------------------------------------------------
    def _accept_states(self, m: Module, s: _State) -> None:
        """IDLE, ARGS (the payload's first bytes into `args`) and CHECK (each command's arguments)."""
        with m.State("IDLE"):
            with m.If(self.start):
                m.d.sync += [s.command.eq(self.command), s.length.eq(self.length), s.arg_byte.eq(0)]
                m.next = "ARGS"
        with m.State("ARGS"):
            m.d.comb += [self.buf_en.eq(1), self.buf_addr.eq(s.arg_byte)]
            m.d.sync += s.arg_byte.eq(s.arg_byte + 1)
            with m.If(s.arg_byte != 0):  # byte arg_byte - 1 arrives: shift it in from the top
                m.d.sync += s.args.eq(Cat(s.args[8:], self.buf_data))
            with m.If(s.arg_byte == READ_PAYLOAD_BYTES):
                m.next = "CHECK"
        with m.State("CHECK"):
            with m.Switch(s.command):
                with m.Case(Command.LOAD):
                    self._check_load(m, s)
                with m.Case(Command.RUN):
                    self._check_run(m, s)
                with m.Default():  # READ
                    self._check_read(m, s)

    def _check_load(self, m: Module, s: _State) -> None:
        with m.If(s.length < LOAD_HEADER_BYTES):
            _answer(m, s, Status.BAD_ARGUMENT)
        with m.Elif(~s.sel_known):
            _answer(m, s, Status.UNKNOWN_REGION)
        with m.Else():
            m.d.sync += [s.remainder.eq(s.length - LOAD_HEADER_BYTES), s.beats.eq(0)]
            m.next = "COUNT"

    def _check_run(self, m: Module, s: _State) -> None:
        with m.If((s.length != RUN_PAYLOAD_BYTES) | (s.count == 0)):
            _answer(m, s, Status.BAD_ARGUMENT)
        with m.Elif(s.first + s.count > s.programmed):
            _answer(m, s, Status.OUT_OF_RANGE)
        with m.Else():
            m.d.sync += [s.layer.eq(s.first), s.layers_left.eq(s.count), s.cycles.eq(0), s.counting.eq(1)]
            m.next = "FETCH"

    def _check_read(self, m: Module, s: _State) -> None:
        """READ needs nothing more than its checks: the buffer's streamer starts here, PAYLOAD passes it on."""
        cfg = self.config
        with m.If(s.length != READ_PAYLOAD_BYTES):
            _answer(m, s, Status.BAD_ARGUMENT)
        with m.Elif(s.buffer_id > 1):
            _answer(m, s, Status.UNKNOWN_REGION)
        with m.Elif((s.read_length > cfg.max_payload) | (s.offset + s.read_length > cfg.act_depth)):
            _answer(m, s, Status.OUT_OF_RANGE)
        with m.Else():
            for k, reader in enumerate(s.acts):
                m.d.comb += [reader.start.eq(s.buffer_id == k), reader.base.eq(s.offset),
                             reader.count.eq(s.read_length)]
            m.d.sync += s.source.eq(s.buffer_id)
            _answer(m, s, Status.OK, s.read_length)

    # --- LOAD ------------------------------------------------------------------------------------------------------
    def _load_states(self, m: Module, s: _State) -> None:
        """COUNT (the payload's beats, checked against the region) and WRITE (bytes gathered into beats)."""
        with m.State("COUNT"):
            with m.If(s.remainder >= s.sel_bytes):
                m.d.sync += [s.remainder.eq(s.remainder - s.sel_bytes), s.beats.eq(s.beats + 1)]
            with m.Elif(s.remainder != 0):
                _answer(m, s, Status.BAD_ARGUMENT)
            with m.Elif(s.offset + s.beats > s.sel_depth):
                _answer(m, s, Status.OUT_OF_RANGE)
            with m.Else():
                m.d.sync += [s.read_addr.eq(LOAD_HEADER_BYTES), s.got.eq(0), s.byte_in_beat.eq(0), s.full.eq(0),
                             s.write_addr.eq(s.offset)]
                with m.If((s.region_id == REGION_IDS["program"]) & (s.beats != 0)
                          & (s.offset + s.beats > s.programmed)):
                    m.d.sync += s.programmed.eq(s.offset + s.beats)
                m.next = "WRITE"
        with m.State("WRITE"):
            more = s.read_addr < s.length
            m.d.comb += [self.buf_en.eq(1), self.buf_addr.eq(s.read_addr), s.load_we.eq(s.full)]
            m.d.sync += [s.got.eq(more), s.full.eq(0)]
            with m.If(more):
                m.d.sync += s.read_addr.eq(s.read_addr + 1)
            with m.If(s.got):
                m.d.sync += [s.beat.word_select(s.byte_in_beat, 8).eq(self.buf_data),
                             s.byte_in_beat.eq(s.byte_in_beat + 1)]
                with m.If(s.byte_in_beat == s.sel_bytes - 1):
                    m.d.sync += [s.byte_in_beat.eq(0), s.full.eq(1)]
            with m.If(s.full):
                m.d.sync += s.write_addr.eq(s.write_addr + 1)
            with m.If(~more & ~s.got & ~s.full):
                _answer(m, s, Status.OK)

    def _load_writes(self, m: Module, s: _State) -> None:
        """Every region's write port takes the gathered beat at its address (the layer writer overrides act0/1)."""
        for region in self.config.regions:
            port = s.writes[region.name]
            m.d.comb += [port.addr.eq(s.write_addr), port.data.eq(s.beat[:region.width]),
                         port.en.eq(s.load_we & (s.region_id == region.id))]

    # --- RUN -------------------------------------------------------------------------------------------------------
    def _run_states(self, m: Module, s: _State) -> None:
        """FETCH and DESC (a descriptor from the program), CHECK_DESC (its kind and ranges), LAYER (until done)."""
        program = s.reads["program"]
        with m.State("FETCH"):
            m.d.comb += [program.addr.eq(s.layer), program.en.eq(1)]
            m.next = "DESC"
        with m.State("DESC"):
            m.d.sync += s.desc.eq(program.data)
            m.next = "CHECK_DESC"
        with m.State("CHECK_DESC"):
            with m.If(~s.is_conv & ~s.is_fc):
                m.d.sync += s.counting.eq(0)
                _answer(m, s, Status.BAD_ARGUMENT)
            with m.Elif(self._past_regions(s.desc, s.is_conv, s.is_fc)):
                m.d.sync += s.counting.eq(0)
                _answer(m, s, Status.OUT_OF_RANGE)
            with m.Else():
                m.d.comb += s.layer_start.eq(1)
                m.next = "LAYER"
        with m.State("LAYER"):
            m.d.comb += [program.addr.eq(s.layer + 1), program.en.eq(1)]  # the next descriptor, for `_prefetch`
            m.d.sync += s.in_layer.eq(1)
            # The flags of the kind not running are 0, its engine and its streamers idle, so one condition serves
            # both. A prefetched next layer's x streamer and engine cfg beat are not this layer's.
            early_fc = s.prefetched & s.x_fc  # the FC layer behind this one has its cfg and streams on the way
            busy = [r.busy & ~early_fc if name.startswith("fc.") else r.busy
                    for name, r in s.streamers.items() if name not in ("act0", "act1")]
            busy += [r.busy & ~(s.prefetched & (s.x_src == k)) for k, r in enumerate(s.acts)]
            conv_cfg = s.conv_cfg_pending & ~(s.prefetched & ~s.x_fc)
            done = ((s.written == s.desc.out_count) & ~s.post_cfg_pending & ~conv_cfg
                    & ~(s.fc_cfg_pending & ~early_fc) & ~Cat(*busy).any())
            if s.conv is not None:
                done &= ~s.conv.post_busy
            with m.If(done):
                m.d.sync += [s.layer.eq(s.layer + 1), s.layers_left.eq(s.layers_left - 1), s.running.eq(0),
                             s.in_layer.eq(0), s.x_gate.eq(0)]
                with m.If(s.layers_left == 1):
                    m.d.sync += [s.counting.eq(0), s.source.eq(2), s.sent.eq(STALLED_PAYLOAD_BYTES - CYCLE_BYTES)]
                    _answer(m, s, Status.OK, CYCLE_BYTES)
                with m.Else():
                    m.next = "FETCH"
            with m.Elif(s.quiet == self.config.watchdog_cycles):
                m.d.comb += s.abort.eq(1)
                m.d.sync += [s.counting.eq(0), s.source.eq(2), s.sent.eq(0), s.in_layer.eq(0)]
                _answer(m, s, Status.STALLED, STALLED_PAYLOAD_BYTES)
            with m.Else():
                self._prefetch(m, s, data.View(self.config.descriptor_layout, program.data))

    def _prefetch(self, m: Module, s: _State, nxt: Any) -> None:
        """Start the next layer's input while this conv layer finishes, when the next one reads what this one
        writes. A conv layer behind a conv layer: its x and engine cfg beat (the engine loads a layer while it
        computes the one before: its spectrum buffer is double), so its load overlaps this one's compute instead of
        following it. An FC layer (its engine idle meanwhile): its x, cfg beat and weight streams, so it has loaded
        its input by the time this layer ends. The x streamer is held at each word until this layer has written it
        (`_layer_inputs`); everything else of the next layer (a conv layer's weights and quant, the post stage, the
        writer, the FC engine's output) waits until this one is done. Only once the engine has taken all of this
        layer's input (not `loading`): an x_count short of the cfg then stalls this layer, as it would without the
        overlap, instead of the next layer's words completing its input."""
        if s.conv is None:
            return
        next_conv = nxt.kind == KINDS["conv"]
        next_fc = (nxt.kind == KINDS["fc"]) if s.fc is not None else 0
        ready = (s.in_layer & ~s.prefetched & (s.layers_left > 1) & s.is_conv & (next_conv | next_fc)
                 & (nxt.src != s.desc.src) & ~s.conv_cfg_pending & ~s.conv.loading
                 & ~Mux(s.desc.src, s.acts[1].busy, s.acts[0].busy)
                 & ~self._past_regions(nxt, next_conv, next_fc))
        with m.If(ready):
            for k, reader in enumerate(s.acts):
                m.d.comb += [reader.start.eq(nxt.src == k), reader.base.eq(0), reader.count.eq(nxt.x_count)]
            m.d.sync += [s.prefetched.eq(1), s.x_gate.eq(1), s.x_src.eq(nxt.src), s.x_fc.eq(next_fc)]
            with m.If(next_conv):
                m.d.sync += [s.conv_cfg_pending.eq(1), s.conv_cfg_beat.eq(nxt.conv.cfg)]
            if s.fc is not None:
                with m.If(next_fc):
                    m.d.sync += [s.fc_cfg_pending.eq(1), s.fc_cfg_beat.eq(nxt.fc.cfg)]
                    for name, start, count in self._fc_streams(nxt):
                        reader = s.streamers[name]
                        m.d.comb += [reader.start.eq(1), reader.base.eq(start), reader.count.eq(count)]

    @staticmethod
    def _fc_streams(desc: Any) -> list[tuple[str, Any, Any]]:
        """The FC engine's weight regions with the descriptor's start and count of each."""
        f = desc.fc
        return [("fc.xor", f.xor_start, f.xor_count), ("fc.bim", f.bim_start, f.bim_count),
                ("fc.scale", f.scale_start, f.scale_count)]

    def _past_regions(self, desc: Any, is_conv: Any, is_fc: Any) -> Any:
        """The descriptor `desc` (of kind conv or fc as the flags say) reads or writes past an activation buffer or
        past one of its kind's weight regions."""
        cfg = self.config
        past = (desc.x_count > cfg.act_depth) | (desc.out_count > cfg.act_depth)
        if cfg.conv is not None:
            c = desc.conv
            past |= is_conv & ((c.w_start + c.w_count > cfg.conv_w_depth)
                               | (c.quant_start + c.quant_count > cfg.conv_quant_depth))
        if cfg.fc is not None:
            f = desc.fc
            past |= is_fc & ((f.xor_start + f.xor_count > cfg.fc_xor_depth)
                               | (f.bim_start + f.bim_count > cfg.fc_bim_depth)
                               | (f.scale_start + f.scale_count > cfg.fc_scale_depth))
        return past

    # --- the answer ------------------------------------------------------------------------------------------------
    def _answer_states(self, m: Module, s: _State) -> None:
        """RESPOND (the header) and PAYLOAD (READ's buffer from its streamer, or RUN's cycle count)."""
        with m.State("RESPOND"):
            m.d.comb += self.response.valid.eq(1)
            with m.If(self.response.ready):
                m.next = "PAYLOAD"
                with m.If(s.resp_length == 0):
                    m.next = "IDLE"
        with m.State("PAYLOAD"):
            with m.Switch(s.source):
                for k, reader in enumerate(s.acts):
                    with m.Case(k):
                        m.d.comb += [self.payload.valid.eq(reader.o.valid), reader.o.ready.eq(self.payload.ready),
                                     self.payload.payload.eq(reader.o.payload)]
                        with m.If(~reader.busy):
                            m.next = "IDLE"
                with m.Default():
                    m.d.comb += [self.payload.valid.eq(1), self.payload.payload.eq(s.run_answer.word_select(s.sent, 8))]
                    with m.If(self.payload.ready):
                        m.d.sync += s.sent.eq(s.sent + 1)
                        with m.If(s.sent == STALLED_PAYLOAD_BYTES - 1):
                            m.next = "IDLE"

    # --- a layer's datapath ----------------------------------------------------------------------------------------
    def _layer_inputs(self, m: Module, s: _State) -> None:
        """At a layer's start the streamers of x and of the kind's weight regions; their beats to the engine."""
        desc = s.desc
        with m.If(s.layer_start):
            m.d.sync += [s.running.eq(1), s.written.eq(0), s.prefetched.eq(0)]
            with m.If(~s.prefetched):  # a prefetched layer's x is on its way already
                m.d.sync += [s.x_src.eq(desc.src), s.x_fc.eq(s.is_fc)]
        for k, reader in enumerate(s.acts):
            with m.If(s.layer_start & ~s.prefetched):
                m.d.comb += [reader.start.eq(desc.src == k), reader.base.eq(0), reader.count.eq(desc.x_count)]
            # A prefetched layer reads what the running one is still writing: each word only once written.
            m.d.comb += reader.hold.eq(s.x_gate & (s.x_src == k) & (reader.addr >= s.written))
        weight_streams = []  # (region, descriptor start, count, kind flag, engine input)
        if s.conv is not None:
            c = desc.conv
            weight_streams += [("conv.w", c.w_start, c.w_count, s.is_conv, s.conv.w),
                               ("conv.quant", c.quant_start, c.quant_count, s.is_conv, s.conv.quant)]
        if s.fc is not None:
            # A prefetched FC layer's streams are on their way already (`_prefetch`).
            weight_streams += [(name, start, count, s.is_fc & ~s.prefetched, getattr(s.fc, name[3:]))
                               for name, start, count in self._fc_streams(desc)]
        for name, start, number, kind, port in weight_streams:
            reader = s.streamers[name]
            with m.If(s.layer_start & kind):
                m.d.comb += [reader.start.eq(1), reader.base.eq(start), reader.count.eq(number)]
            m.d.comb += [port.valid.eq(reader.o.valid), port.payload.eq(reader.o.payload),
                         reader.o.ready.eq(port.ready)]

        # x from the source buffer (only while a layer runs: READ uses the same streamers), to the kind's engine.
        src_reader = [reader.o for reader in s.acts]
        x_valid = Mux(s.x_src, src_reader[1].valid, src_reader[0].valid)
        x_payload = Mux(s.x_src, src_reader[1].payload, src_reader[0].payload)
        x_ready = Signal()
        with m.If(s.running):
            for engine, kind in ((s.conv, ~s.x_fc), (s.fc, s.x_fc)):
                if engine is not None:
                    m.d.comb += [engine.x.valid.eq(x_valid & kind), engine.x.payload.eq(x_payload)]
                    with m.If(kind):
                        m.d.comb += x_ready.eq(engine.x.ready)
            for k, o in enumerate(src_reader):
                m.d.comb += o.ready.eq((s.x_src == k) & x_ready)

    def _layer_outputs(self, m: Module, s: _State) -> tuple[Signal, Signal]:
        """Each engine's cfg beats; its output (the conv engine's through the post stage) as the layer's result."""
        # The writer is always ready: one memory write per cycle keeps up with any producer.
        result_valid = Signal()
        result = Signal(8)
        if s.conv is not None:
            self._conv_cfg(m, s)
            m.d.comb += [s.conv.o.ready.eq(1), result_valid.eq(s.conv.o.valid), result.eq(s.conv.o.payload)]
        if s.fc is not None:
            fc = s.fc
            with m.If(s.layer_start & s.is_fc & ~s.prefetched):  # else `_prefetch` has sent it
                m.d.sync += [s.fc_cfg_pending.eq(1), s.fc_cfg_beat.eq(s.desc.fc.cfg)]
            # An FC layer that loaded behind a conv layer keeps its output until that layer is done and it runs.
            m.d.comb += [fc.cfg.valid.eq(s.fc_cfg_pending), fc.cfg.payload.eq(s.fc_cfg_beat),
                         fc.o.ready.eq(s.running & s.is_fc)]
            with m.If(fc.cfg.valid & fc.cfg.ready):
                m.d.sync += s.fc_cfg_pending.eq(0)
            # The engines run one layer at a time, so only the running kind's engine has output to give.
            with m.If(s.is_fc):
                m.d.comb += [result_valid.eq(fc.o.valid), result.eq(fc.o.payload)]
        return result_valid, result

    def _conv_cfg(self, m: Module, s: _State) -> None:
        """Two beats per conv layer, straight from the descriptor: the engine's cfg and its post stages' window."""
        conv = s.conv
        with m.If(s.layer_start & s.is_conv):
            m.d.sync += s.post_cfg_pending.eq(1)
            with m.If(~s.prefetched):  # else `_prefetch` has sent it
                m.d.sync += [s.conv_cfg_pending.eq(1), s.conv_cfg_beat.eq(s.desc.conv.cfg)]
        m.d.comb += [conv.cfg.valid.eq(s.conv_cfg_pending), conv.cfg.payload.eq(s.conv_cfg_beat),
                     conv.post.valid.eq(s.post_cfg_pending), conv.post.payload.eq(s.desc.post)]
        with m.If(conv.cfg.valid & conv.cfg.ready):
            m.d.sync += s.conv_cfg_pending.eq(0)
        with m.If(conv.post.valid & conv.post.ready):
            m.d.sync += s.post_cfg_pending.eq(0)

    def _layer_writes(self, m: Module, s: _State, result_valid: Signal, result: Signal) -> None:
        """The layer's results into the other activation buffer from address 0."""
        desc, act_depth = s.desc, self.config.act_depth
        layer_we = s.running & result_valid & (s.written < act_depth)
        with m.If(s.running & result_valid):
            m.d.sync += s.written.eq(s.written + 1)
        for k, name in enumerate(("act0", "act1")):
            port = s.writes[name]
            with m.If(s.running):  # LOAD never runs with a layer: the port is the writer's then
                m.d.comb += [port.addr.eq(s.written), port.data.eq(result), port.en.eq(layer_we & (desc.src != k))]

    def _watchdog(self, m: Module, s: _State, result_valid: Signal) -> None:
        """The running layer's quiet cycles, restarted by any beat on its streams; an abort's clean-up.

        A beat is a streamer's word taken by an engine, a cfg beat taken, a value out of the conv engine, or a
        result written (the writer is always ready). LAYER aborts at `watchdog_cycles`.
        """
        streams = [reader.o for reader in s.streamers.values()]
        for engine in (s.conv, s.fc):
            if engine is not None:
                streams.append(engine.cfg)
        if s.conv is not None:
            streams += [s.conv.post, s.conv.o]
        progress = Cat(result_valid, *(port.valid & port.ready for port in streams)).any()
        with m.If(s.layer_start | progress):
            m.d.sync += s.quiet.eq(0)
        with m.Elif(s.running & (s.quiet != self.config.watchdog_cycles)):
            m.d.sync += s.quiet.eq(s.quiet + 1)

        # What the layer still waited for, kept for the STALLED answer.
        desc = s.desc
        flags = {Waiting.X: Mux(desc.src, s.acts[1].busy, s.acts[0].busy),
                 Waiting.CFG: s.conv_cfg_pending | s.post_cfg_pending | s.fc_cfg_pending,
                 Waiting.OUTPUT: s.written != desc.out_count}
        for flag, region in ((Waiting.CONV_W, "conv.w"), (Waiting.CONV_QUANT, "conv.quant"),
                             (Waiting.FC_XOR, "fc.xor"), (Waiting.FC_BIM, "fc.bim"), (Waiting.FC_SCALE, "fc.scale")):
            if region in s.streamers:
                flags[flag] = s.streamers[region].busy
        waiting = Signal(8)
        for flag, busy in flags.items():
            m.d.comb += waiting[flag.bit_length() - 1].eq(busy)

        # The datapath's registers are reset a cycle later (`_add_engines`, `_add_regions`); the sequencer's own
        # layer state goes now, so no cfg beat is offered to the engines afterwards and the writer lets go.
        m.d.sync += s.reset.eq(s.abort)
        with m.If(s.abort):
            m.d.sync += [s.waiting.eq(waiting), s.running.eq(0), s.quiet.eq(0), s.conv_cfg_pending.eq(0),
                         s.post_cfg_pending.eq(0), s.fc_cfg_pending.eq(0),
                         s.prefetched.eq(0), s.x_gate.eq(0)]
