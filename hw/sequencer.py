"""The accelerator's memories and layer sequencer: what LOAD, RUN and READ do.

`Sequencer` owns the regions of an `AcceleratorConfig` (one `Memory` each, or an `hw.memory.SpramMemory` for the
config's `spram_regions`: the program of layer descriptors, the int8 activation buffers act0 and act1, each
engine's weight streams), the engines the config has, and the conv engine's post stage. `hw.top.Accelerator`
hands it a LOAD, RUN or READ request whose payload sits in the frame buffer; the sequencer reads its arguments
from there, checks them, does the work and answers through the frame transmitter.

Kind "conv" (the SPEC2 engine, `Spec2Conv`, then `Crop`, then `MaxPool2` or a bypass):

    act[src] ─ RegionReader ─ x ─┐
    conv.w   ─ RegionReader ─ w ─ Spec2Conv ─ o ─ Crop ─┬─ MaxPool2 ─┬─ writer ─ act[1 - src]
    conv.quant ─ RegionReader ──┘   ↑ cfg      ↑ cfg    └─ (pool 0) ─┘
                                    descriptor (program[layer])

Kind "fc" (`FcEngine`; no post stage):

    act[src] ─ RegionReader ─ x ─────┐
    fc.scale ─ RegionReader ─ scale ─┤
    fc.xor   ─ RegionReader ─ xor ───┼─ FcEngine ─ o ─ writer ─ act[1 - src]
    fc.bim   ─ RegionReader ─ bim ───┘   ↑ cfg

A RUN fetches descriptors first..first+count-1 one after the other. For each it checks the kind (one of an
engine the config has) and the ranges, starts the kind's streamers (x from address 0, the weight regions from
the descriptor's starts), sends the kind's cfg beats (conv: the engine, the crop and, if pooling, the pool;
fc: the engine) and writes the results to the other buffer from address 0. The layer is over when out_count
values have been written and every cfg beat has been taken (and, for conv, the crop has let its last sample
go: a pool drops an odd last row after its final output). Layers never overlap: each one reads what the
previous one wrote. The answer carries the cycles from the first fetch to the last layer's end.

The FC engine's bim region holds each layer's canonical stream over all its planes' tiles
(`hw.spec.fc_stream.layer_streams`), so every region is streamed once per layer, in order.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.spec.protocol import LOAD_HEADER_BYTES, READ_PAYLOAD_BYTES, RUN_PAYLOAD_BYTES, Command, Status

from .config import KINDS, AcceleratorConfig
from .fc_engine import FcEngine
from .link import Response
from .memory import RegionReader, SpramMemory, SpramParams
from .pool import Crop, MaxPool2
from .spectral.pipeline import Spec2Conv

#: Bytes of the RUN answer: the cycle count, u32 little-endian.
CYCLE_BYTES = 4


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
        cfg = self.config
        conv_p, fc_p = cfg.conv, cfg.fc
        regions = {r.name: r for r in cfg.regions}
        desc_layout = cfg.descriptor_layout

        writes, reads = {}, {}
        for name, region in regions.items():
            key = name.replace(".", "_")
            if name in cfg.spram_regions:
                # Same ports, one single-port RAM: LOAD's writes and the streamer's reads never share a cycle.
                m.submodules[f"region_{key}"] = spram = SpramMemory(SpramParams(region.width, region.depth))
                writes[name], reads[name] = spram.write, spram.read
            else:
                m.submodules[f"region_{key}"] = mem = Memory(shape=region.width, depth=region.depth, init=[])
                writes[name], reads[name] = mem.write_port(), mem.read_port()
        streamers = {}
        for name in (n for n in regions if n != "program"):
            region = regions[name]
            m.submodules[f"read_{name.replace('.', '_')}"] = s = streamers[name] = RegionReader(region.width,
                                                                                               region.depth)
            m.d.comb += [reads[name].addr.eq(s.addr), reads[name].en.eq(s.en), s.data.eq(reads[name].data)]
        acts = [streamers["act0"], streamers["act1"]]

        if conv_p is not None:
            m.submodules.conv = conv = Spec2Conv(conv_p)
            m.submodules.crop = crop = Crop(cfg.crop)
            m.submodules.pool = pool = MaxPool2(cfg.pool)
        if fc_p is not None:
            m.submodules.fc = fc = FcEngine(fc_p)

        # --- command state ---------------------------------------------------------------------------------------
        command = Signal(8)
        length = Signal(16)
        args = Signal(8 * READ_PAYLOAD_BYTES)  # the first payload bytes, little-endian; LOAD/READ/RUN views below
        arg_byte = Signal(range(READ_PAYLOAD_BYTES + 1))
        status = Signal(8)
        resp_length = Signal(16)
        source = Signal(range(3))  # answer payload: 0 act0, 1 act1, 2 the cycle count
        sent = Signal(range(CYCLE_BYTES))
        programmed = Signal(range(cfg.program_depth + 1))  # program words loaded so far (RUN's bound)

        region_id, offset = args[0:8], args[8:24]
        first, count = args[0:8], args[8:16]
        buffer_id, read_length = args[0:8], args[24:40]

        # LOAD's region, decoded once: bytes per beat, depth, id known.
        sel_bytes = Signal(range(max(r.beat_bytes for r in regions.values()) + 1))
        sel_depth = Signal(range(max(r.depth for r in regions.values()) + 1))
        sel_known = Signal()
        with m.Switch(region_id):
            for region in regions.values():
                with m.Case(region.id):
                    m.d.comb += [sel_bytes.eq(region.beat_bytes), sel_depth.eq(region.depth), sel_known.eq(1)]

        # LOAD's beat count, by repeated subtraction (a divider by a run-time constant is not worth its logic:
        # a frame takes far longer on the link than these max_payload cycles at most).
        remainder = Signal(16)
        beats = Signal(17)
        # LOAD's writer: payload bytes (read one cycle after addressing) gathered into a beat, then written.
        max_bytes = max(r.beat_bytes for r in regions.values())
        beat = Signal(8 * max_bytes)
        read_addr = Signal(16)
        got = Signal()  # buf_data holds the byte addressed last cycle
        byte_in_beat = Signal(range(max_bytes))
        full = Signal()  # `beat` is complete: write it this cycle
        write_addr = Signal(17)
        load_we = Signal()

        # RUN's state.
        layer = Signal(8)
        layers_left = Signal(8)
        cycles = Signal(8 * CYCLE_BYTES)
        counting = Signal()
        desc = Signal(desc_layout)
        running = Signal()  # a layer's datapath is live
        written = Signal(range(cfg.act_depth + 1))
        conv_cfg_pending, crop_cfg_pending, pool_cfg_pending, fc_cfg_pending = Signal(), Signal(), Signal(), Signal()
        layer_start = Signal()
        # The descriptor's kind: only a kind of an engine this config has gets past CHECK_DESC, so with one
        # engine the other kind's flag is a constant 0 and its logic disappears.
        is_conv, is_fc = Signal(), Signal()
        if conv_p is not None:
            m.d.comb += is_conv.eq(desc.kind == KINDS["conv"])
        if fc_p is not None:
            m.d.comb += is_fc.eq(desc.kind == KINDS["fc"])

        with m.If(counting):
            m.d.sync += cycles.eq(cycles + 1)

        def answer(code: Status, size=0) -> None:
            m.d.sync += [status.eq(code), resp_length.eq(size)]
            m.next = "RESPOND"

        m.d.comb += [self.response.payload.status.eq(status), self.response.payload.length.eq(resp_length)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [command.eq(self.command), length.eq(self.length), arg_byte.eq(0)]
                    m.next = "ARGS"
            with m.State("ARGS"):
                m.d.comb += [self.buf_en.eq(1), self.buf_addr.eq(arg_byte)]
                m.d.sync += arg_byte.eq(arg_byte + 1)
                with m.If(arg_byte != 0):  # byte arg_byte - 1 arrives: shift it in from the top
                    m.d.sync += args.eq(Cat(args[8:], self.buf_data))
                with m.If(arg_byte == READ_PAYLOAD_BYTES):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.Switch(command):
                    with m.Case(Command.LOAD):
                        with m.If(length < LOAD_HEADER_BYTES):
                            answer(Status.BAD_ARGUMENT)
                        with m.Elif(~sel_known):
                            answer(Status.UNKNOWN_REGION)
                        with m.Else():
                            m.d.sync += [remainder.eq(length - LOAD_HEADER_BYTES), beats.eq(0)]
                            m.next = "COUNT"
                    with m.Case(Command.RUN):
                        with m.If((length != RUN_PAYLOAD_BYTES) | (count == 0)):
                            answer(Status.BAD_ARGUMENT)
                        with m.Elif(first + count > programmed):
                            answer(Status.OUT_OF_RANGE)
                        with m.Else():
                            m.d.sync += [layer.eq(first), layers_left.eq(count), cycles.eq(0), counting.eq(1)]
                            m.next = "FETCH"
                    with m.Default():  # READ
                        with m.If(length != READ_PAYLOAD_BYTES):
                            answer(Status.BAD_ARGUMENT)
                        with m.Elif(buffer_id > 1):
                            answer(Status.UNKNOWN_REGION)
                        with m.Elif((read_length > cfg.max_payload) | (offset + read_length > cfg.act_depth)):
                            answer(Status.OUT_OF_RANGE)
                        with m.Else():
                            for k, reader in enumerate(acts):
                                m.d.comb += [reader.start.eq(buffer_id == k), reader.base.eq(offset),
                                             reader.count.eq(read_length)]
                            m.d.sync += source.eq(buffer_id)
                            answer(Status.OK, read_length)

            # --- LOAD -----------------------------------------------------------------------------------------
            with m.State("COUNT"):
                with m.If(remainder >= sel_bytes):
                    m.d.sync += [remainder.eq(remainder - sel_bytes), beats.eq(beats + 1)]
                with m.Elif(remainder != 0):
                    answer(Status.BAD_ARGUMENT)
                with m.Elif(offset + beats > sel_depth):
                    answer(Status.OUT_OF_RANGE)
                with m.Else():
                    m.d.sync += [read_addr.eq(LOAD_HEADER_BYTES), got.eq(0), byte_in_beat.eq(0), full.eq(0),
                                 write_addr.eq(offset)]
                    with m.If((region_id == regions["program"].id) & (beats != 0) & (offset + beats > programmed)):
                        m.d.sync += programmed.eq(offset + beats)
                    m.next = "WRITE"
            with m.State("WRITE"):
                more = read_addr < length
                m.d.comb += [self.buf_en.eq(1), self.buf_addr.eq(read_addr), load_we.eq(full)]
                m.d.sync += [got.eq(more), full.eq(0)]
                with m.If(more):
                    m.d.sync += read_addr.eq(read_addr + 1)
                with m.If(got):
                    m.d.sync += [beat.word_select(byte_in_beat, 8).eq(self.buf_data), byte_in_beat.eq(byte_in_beat + 1)]
                    with m.If(byte_in_beat == sel_bytes - 1):
                        m.d.sync += [byte_in_beat.eq(0), full.eq(1)]
                with m.If(full):
                    m.d.sync += write_addr.eq(write_addr + 1)
                with m.If(~more & ~got & ~full):
                    answer(Status.OK)

            # --- RUN ------------------------------------------------------------------------------------------
            with m.State("FETCH"):
                m.d.comb += [reads["program"].addr.eq(layer), reads["program"].en.eq(1)]
                m.next = "DESC"
            with m.State("DESC"):
                m.d.sync += desc.eq(reads["program"].data)
                m.next = "CHECK_DESC"
            with m.State("CHECK_DESC"):
                past = (desc.x_count > cfg.act_depth) | (desc.out_count > cfg.act_depth)
                if conv_p is not None:
                    c = desc.conv
                    past |= is_conv & ((c.w_start + c.w_count > cfg.conv_w_depth)
                                       | (c.quant_start + c.quant_count > cfg.conv_quant_depth))
                if fc_p is not None:
                    f = desc.fc
                    past |= is_fc & ((f.xor_start + f.xor_count > cfg.fc_xor_depth)
                                     | (f.bim_start + f.bim_count > cfg.fc_bim_depth)
                                     | (f.scale_start + f.scale_count > cfg.fc_scale_depth))
                with m.If(~is_conv & ~is_fc):
                    m.d.sync += counting.eq(0)
                    answer(Status.BAD_ARGUMENT)
                with m.Elif(past):
                    m.d.sync += counting.eq(0)
                    answer(Status.OUT_OF_RANGE)
                with m.Else():
                    m.d.comb += layer_start.eq(1)
                    m.next = "LAYER"
            with m.State("LAYER"):
                # The flags of the kind not running are 0 and its crop idle, so one condition serves both.
                done = ((written == desc.out_count) & ~crop_cfg_pending & ~conv_cfg_pending & ~pool_cfg_pending
                        & ~fc_cfg_pending)
                if conv_p is not None:
                    done &= ~crop.busy
                with m.If(done):
                    m.d.sync += [layer.eq(layer + 1), layers_left.eq(layers_left - 1), running.eq(0)]
                    with m.If(layers_left == 1):
                        m.d.sync += [counting.eq(0), source.eq(2), sent.eq(0)]
                        answer(Status.OK, CYCLE_BYTES)
                    with m.Else():
                        m.next = "FETCH"

            # --- the answer -----------------------------------------------------------------------------------
            with m.State("RESPOND"):
                m.d.comb += self.response.valid.eq(1)
                with m.If(self.response.ready):
                    m.next = "PAYLOAD"
                    with m.If(resp_length == 0):
                        m.next = "IDLE"
            with m.State("PAYLOAD"):
                with m.Switch(source):
                    for k, reader in enumerate(acts):
                        with m.Case(k):
                            m.d.comb += [self.payload.valid.eq(reader.o.valid), reader.o.ready.eq(self.payload.ready),
                                         self.payload.payload.eq(reader.o.payload)]
                            with m.If(~reader.busy):
                                m.next = "IDLE"
                    with m.Default():
                        m.d.comb += [self.payload.valid.eq(1), self.payload.payload.eq(cycles.word_select(sent, 8))]
                        with m.If(self.payload.ready):
                            m.d.sync += sent.eq(sent + 1)
                            with m.If(sent == CYCLE_BYTES - 1):
                                m.next = "IDLE"

        # --- LOAD's writes: every region's write port takes the gathered beat at its address --------------------
        for name, region in regions.items():
            port = writes[name]
            m.d.comb += [port.addr.eq(write_addr), port.data.eq(beat[:region.width]),
                         port.en.eq(load_we & (region_id == region.id))]

        # --- a layer's datapath ---------------------------------------------------------------------------------
        with m.If(layer_start):
            m.d.sync += [running.eq(1), written.eq(0)]
        for k, reader in enumerate(acts):
            with m.If(layer_start):
                m.d.comb += [reader.start.eq(desc.src == k), reader.base.eq(0), reader.count.eq(desc.x_count)]
        weight_streams = []  # (region, descriptor start, count, kind flag, engine input)
        if conv_p is not None:
            c = desc.conv
            weight_streams += [("conv.w", c.w_start, c.w_count, is_conv, conv.w),
                               ("conv.quant", c.quant_start, c.quant_count, is_conv, conv.quant)]
        if fc_p is not None:
            f = desc.fc
            weight_streams += [("fc.xor", f.xor_start, f.xor_count, is_fc, fc.xor),
                               ("fc.bim", f.bim_start, f.bim_count, is_fc, fc.bim),
                               ("fc.scale", f.scale_start, f.scale_count, is_fc, fc.scale)]
        for name, start, number, kind, port in weight_streams:
            reader = streamers[name]
            m.d.comb += [reader.start.eq(layer_start & kind), reader.base.eq(start), reader.count.eq(number),
                         port.valid.eq(reader.o.valid), port.payload.eq(reader.o.payload),
                         reader.o.ready.eq(port.ready)]

        # x from the source buffer (only while a layer runs: READ uses the same streamers), to the kind's engine.
        src_reader = [acts[0].o, acts[1].o]
        x_valid = Mux(desc.src, src_reader[1].valid, src_reader[0].valid)
        x_payload = Mux(desc.src, src_reader[1].payload, src_reader[0].payload)
        x_ready = Signal()
        with m.If(running):
            if conv_p is not None:
                m.d.comb += [conv.x.valid.eq(x_valid & is_conv), conv.x.payload.eq(x_payload)]
                with m.If(is_conv):
                    m.d.comb += x_ready.eq(conv.x.ready)
            if fc_p is not None:
                m.d.comb += [fc.x.valid.eq(x_valid & is_fc), fc.x.payload.eq(x_payload)]
                with m.If(is_fc):
                    m.d.comb += x_ready.eq(fc.x.ready)
            for k, o in enumerate(src_reader):
                m.d.comb += o.ready.eq((desc.src == k) & x_ready)

        # The writer is always ready: one memory write per cycle keeps up with any producer.
        result_valid = Signal()
        result = Signal(8)
        if conv_p is not None:
            with m.If(layer_start & is_conv):
                m.d.sync += [conv_cfg_pending.eq(1), crop_cfg_pending.eq(1), pool_cfg_pending.eq(desc.post.pool)]
            # One cfg beat each per layer, straight from the descriptor.
            m.d.comb += [conv.cfg.valid.eq(conv_cfg_pending), conv.cfg.payload.eq(c.cfg)]
            with m.If(conv.cfg.valid & conv.cfg.ready):
                m.d.sync += conv_cfg_pending.eq(0)
            post = desc.post
            m.d.comb += [crop.cfg.valid.eq(crop_cfg_pending),
                         crop.cfg.payload.height.eq(c.cfg.height), crop.cfg.payload.width.eq(c.cfg.width),
                         crop.cfg.payload.channels.eq(c.cfg.c_out), crop.cfg.payload.top.eq(post.top),
                         crop.cfg.payload.left.eq(post.left), crop.cfg.payload.out_height.eq(post.height),
                         crop.cfg.payload.out_width.eq(post.width)]
            with m.If(crop.cfg.valid & crop.cfg.ready):
                m.d.sync += crop_cfg_pending.eq(0)
            m.d.comb += [pool.cfg.valid.eq(pool_cfg_pending), pool.cfg.payload.height.eq(post.height),
                         pool.cfg.payload.width.eq(post.width), pool.cfg.payload.channels.eq(c.cfg.c_out)]
            with m.If(pool.cfg.valid & pool.cfg.ready):
                m.d.sync += pool_cfg_pending.eq(0)

            wiring.connect(m, conv.o, crop.i)
            with m.If(post.pool):
                m.d.comb += [pool.i.valid.eq(crop.o.valid), pool.i.payload.eq(crop.o.payload),
                             crop.o.ready.eq(pool.i.ready), pool.o.ready.eq(1),
                             result_valid.eq(pool.o.valid), result.eq(pool.o.payload)]
            with m.Else():
                m.d.comb += [crop.o.ready.eq(1), result_valid.eq(crop.o.valid), result.eq(crop.o.payload)]
        if fc_p is not None:
            with m.If(layer_start & is_fc):
                m.d.sync += fc_cfg_pending.eq(1)
            m.d.comb += [fc.cfg.valid.eq(fc_cfg_pending), fc.cfg.payload.eq(desc.fc.cfg), fc.o.ready.eq(1)]
            with m.If(fc.cfg.valid & fc.cfg.ready):
                m.d.sync += fc_cfg_pending.eq(0)
            # The engines run one layer at a time, so only the running kind's engine has output to give.
            with m.If(is_fc):
                m.d.comb += [result_valid.eq(fc.o.valid), result.eq(fc.o.payload)]
        layer_we = running & result_valid & (written < cfg.act_depth)
        with m.If(running & result_valid):
            m.d.sync += written.eq(written + 1)
        for k, name in enumerate(("act0", "act1")):
            port = writes[name]
            with m.If(running):  # LOAD never runs with a layer: the port is the writer's then
                m.d.comb += [port.addr.eq(written), port.data.eq(result), port.en.eq(layer_we & (desc.src != k))]

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
