"""Dense spatial convolution engine with M multipliers: the baseline SPEC2 is compared with on equal DSPs.

Integer cross-correlation (stride 1, "same" or "valid", exact accumulation) followed by SPEC2's output stage
(`hw.spectral.overlap_add.requant_stages`); golden model `hw.spec.baseline.baseline_conv_fixed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.spec.params import check_ints
from hw.spec.spectral.engine import SHIFT_BITS
from hw.spec.spectral.geometry import PADDINGS
from hw.spectral.overlap_add import REQUANT_STAGES, requant_stages


@dataclass(frozen=True)
class BaselineConvParams:
    """Structural parameters of `BaselineConv` (the layer's shape is fixed at elaboration); validated, hashable.

    c_in, c_out, k, height, width, padding: the layer (input map height x width). m: multipliers (MAC lanes).
    act_bits, weight_bits: signed operand widths. mult_bits, out_bits: requantization widths. relu: clamp at 0.
    """

    c_in: int
    c_out: int
    height: int
    width: int
    m: int
    k: int = 3
    padding: str = "same"
    act_bits: int = 8
    weight_bits: int = 8
    mult_bits: int = 16
    out_bits: int = 8
    relu: bool = False

    def __post_init__(self) -> None:
        check_ints(self, (("c_in", 1, None), ("c_out", 1, None), ("height", 1, None), ("width", 1, None),
                          ("m", 1, None), ("k", 1, None), ("act_bits", 2, None), ("weight_bits", 2, None),
                          ("mult_bits", 1, None), ("out_bits", 2, None)))
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        if self.padding == "valid" and min(self.height, self.width) < self.k:
            raise ValueError(f"height and width must be >= k={self.k} for 'valid' padding")
        if self.m > self.window:
            raise ValueError(f"m must be <= c_in * k * k = {self.window}, got {self.m}")
        if not isinstance(self.relu, bool):
            raise ValueError(f"relu must be a bool, got {self.relu!r}")

    @property
    def window(self) -> int:
        """Products per output value: c_in k^2."""
        return self.c_in * self.k * self.k

    @property
    def groups(self) -> int:
        """Cycles per output value: ceil(c_in k^2 / m)."""
        return -(-self.window // self.m)

    @property
    def pad(self) -> int:
        return (self.k - 1) // 2 if self.padding == "same" else 0

    @property
    def out_shape(self) -> tuple[int, int]:
        if self.padding == "same":
            return self.height, self.width
        return self.height - self.k + 1, self.width - self.k + 1

    @property
    def acc_bits(self) -> int:
        """Exact sum of window products of act_bits x weight_bits signed operands."""
        return self.act_bits + self.weight_bits - 1 + self.window.bit_length()

    @property
    def quant_layout(self) -> data.StructLayout:
        """One beat per output channel, fields from the LSB (bias is `QuantParams.bias_q[o]`)."""
        return data.StructLayout({
            "out_mult": unsigned(self.mult_bits),
            "out_shift": unsigned(SHIFT_BITS),
            "bias": signed(self.acc_bits + self.mult_bits),
        })

    @property
    def latency(self) -> int:
        """Clock edges from an output's last issued group to its output handshake, with no stalls: the MAC's
        three, then the requantizer's."""
        return 3 + REQUANT_STAGES


class BaselineConv(wiring.Component):
    """M parallel MACs over the K x K x C_in window; one output value per `params.groups` cycles.

    Streams (valid/ready; signed values two's complement):

    * `quant`: c_out beats of `params.quant_layout`, channel o's out_mult, out_shift (0..63) and bias.
    * `w`: c_out c_in k^2 weights, signed weight_bits, in torch order (o, i, u, v).
    * `x`: the input map, c_in height width activations, signed act_bits, in (i, row, column) order.
    * `o`: the output map, signed out_bits, in (o, row, column) order: the order `OverlapAdd` emits per channel.

    The three loads run in parallel into their memories; when all are complete the engine computes and
    streams every output, then takes the next layer's loads (the weights and quant too, so the same build
    can run layer after layer). The window of an output, flattened in (i, u, v) order, is cut into groups
    of M products; group g's lane j handles element g M + j (a table fixed at elaboration), reading its
    activation from its own copy of the map (zero outside the map) and its weight from a word of M weights
    per (o, g). The map is held M times, one memory per lane with one write and one read port (a block
    RAM each on ECP5/iCE40): the load writes every copy with the same beat, so they always agree, and no
    memory has more than one read port. Pipeline: issue -> memories -> M products (the multipliers) -> sum and
    accumulate -> requantize (two stages) -> output; everything advances on one enable, ~o.valid | o.ready.
    """

    def __init__(self, params: BaselineConvParams):
        if not isinstance(params, BaselineConvParams):
            self._MustUse__silence = True
            raise TypeError(f"params must be a BaselineConvParams, got {type(params).__name__}")
        self.params = params
        super().__init__({
            "quant": In(stream.Signature(params.quant_layout)),
            "w": In(stream.Signature(signed(params.weight_bits))),
            "x": In(stream.Signature(signed(params.act_bits))),
            "o": Out(stream.Signature(signed(params.out_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lanes, groups, k = p.m, p.groups, p.k
        hb, wb = (p.height - 1).bit_length(), (p.width - 1).bit_length()
        gb = (groups - 1).bit_length()
        h_out, w_out = p.out_shape

        # The map, one copy per lane: every lane reads an activation each cycle, and one memory with M read
        # ports is no block RAM (at M = 16 yosys's memory mapper gives up on it). Each copy has one write port
        # (the load writes all copies at once) and one read port, so it is one plain block RAM.
        xmems = []
        for lane in range(lanes):
            m.submodules[f"xmem{lane}"] = mem = Memory(shape=signed(p.act_bits), depth=p.c_in << (hb + wb), init=[])
            xmems.append(mem)
        m.submodules.wmem = wmem = Memory(shape=unsigned(lanes * p.weight_bits), depth=p.c_out << gb, init=[])
        m.submodules.qmem = qmem = Memory(shape=p.quant_layout, depth=p.c_out, init=[])

        # --- loads ------------------------------------------------------------------------------------
        q_done, w_done, x_done = Signal(), Signal(), Signal()
        q_o = Signal(range(p.c_out))
        q_write = qmem.write_port()
        m.d.comb += [self.quant.ready.eq(~q_done), q_write.addr.eq(q_o), q_write.data.eq(self.quant.payload),
                     q_write.en.eq(self.quant.valid & ~q_done)]
        with m.If(self.quant.valid & ~q_done):
            m.d.sync += q_o.eq(q_o + 1)
            with m.If(q_o == p.c_out - 1):
                m.d.sync += [q_o.eq(0), q_done.eq(1)]

        # Weight j of channel o (torch order) is lane j mod M of word (o, j div M).
        w_o, w_g, w_lane = Signal(range(p.c_out)), Signal(range(groups)), Signal(range(lanes))
        w_j = Signal(range(p.window))
        w_write = wmem.write_port(granularity=p.weight_bits)
        w_take = self.w.valid & ~w_done
        m.d.comb += [self.w.ready.eq(~w_done), w_write.addr.eq((w_o << gb) | w_g),
                     w_write.data.eq(self.w.payload.as_unsigned().replicate(lanes)),
                     w_write.en.eq(Mux(w_take, (Const(1, lanes) << w_lane)[:lanes], 0))]
        with m.If(w_take):
            m.d.sync += [w_j.eq(w_j + 1), w_lane.eq(w_lane + 1)]
            with m.If(w_lane == lanes - 1):
                m.d.sync += [w_lane.eq(0), w_g.eq(w_g + 1)]
            with m.If(w_j == p.window - 1):
                m.d.sync += [w_j.eq(0), w_lane.eq(0), w_g.eq(0), w_o.eq(w_o + 1)]
                with m.If(w_o == p.c_out - 1):
                    m.d.sync += [w_o.eq(0), w_done.eq(1)]

        x_i, x_r, x_c = Signal(range(p.c_in)), Signal(range(p.height)), Signal(range(p.width))
        x_take = self.x.valid & ~x_done
        m.d.comb += self.x.ready.eq(~x_done)
        for mem in xmems:
            x_write = mem.write_port()
            m.d.comb += [x_write.addr.eq((x_i << (hb + wb)) | (x_r << wb) | x_c), x_write.data.eq(self.x.payload),
                         x_write.en.eq(x_take)]
        with m.If(x_take):
            m.d.sync += x_c.eq(x_c + 1)
            with m.If(x_c == p.width - 1):
                m.d.sync += [x_c.eq(0), x_r.eq(x_r + 1)]
                with m.If(x_r == p.height - 1):
                    m.d.sync += [x_r.eq(0), x_i.eq(x_i + 1)]
                    with m.If(x_i == p.c_in - 1):
                        m.d.sync += [x_i.eq(0), x_done.eq(1)]

        # --- issue: output (o, y, x), group g --------------------------------------------------------
        enable = Signal()
        m.d.comb += enable.eq(~self.o.valid | self.o.ready)
        run = q_done & w_done & x_done
        o_ch, y, x, g = Signal(range(p.c_out)), Signal(range(h_out)), Signal(range(w_out)), Signal(range(groups))
        issue = Signal()
        m.d.comb += issue.eq(enable & run)
        with m.If(issue):
            m.d.sync += g.eq(g + 1)
            with m.If(g == groups - 1):
                m.d.sync += [g.eq(0), x.eq(x + 1)]
                with m.If(x == w_out - 1):
                    m.d.sync += [x.eq(0), y.eq(y + 1)]
                    with m.If(y == h_out - 1):
                        m.d.sync += [y.eq(0), o_ch.eq(o_ch + 1)]
                        with m.If(o_ch == p.c_out - 1):
                            # The layer's last reads are issued: the memories are free for the next loads.
                            m.d.sync += [o_ch.eq(0), q_done.eq(0), w_done.eq(0), x_done.eq(0)]

        # Lane j of group g reads channel i at offset (u - pad, v - pad); elements past the window read 0.
        row_bits = max(hb, (h_out - 1).bit_length()) + 2
        col_bits = max(wb, (w_out - 1).bit_length()) + 2
        inside = []
        for lane in range(lanes):
            table = [divmod(g_ * lanes + lane, k * k) if g_ * lanes + lane < p.window else None
                     for g_ in range(groups)]
            chans = Array(Const(t[0] if t else 0, range(p.c_in)) for t in table)
            dus = Array(Const(t[1] // k - p.pad if t else 0, signed(row_bits)) for t in table)
            dvs = Array(Const(t[1] % k - p.pad if t else 0, signed(col_bits)) for t in table)
            used = Array(Const(t is not None) for t in table)
            row, col = Signal(signed(row_bits), name=f"row{lane}"), Signal(signed(col_bits), name=f"col{lane}")
            m.d.comb += [row.eq(y + dus[g]), col.eq(x + dvs[g])]
            ok = Signal(name=f"inside{lane}")
            m.d.comb += ok.eq(used[g] & (row >= 0) & (row < p.height) & (col >= 0) & (col < p.width))
            port = xmems[lane].read_port()
            m.d.comb += [port.addr.eq((chans[g] << (hb + wb)) | (row[:hb] << wb) | col[:wb]), port.en.eq(enable)]
            inside.append((ok, port))
        w_read = wmem.read_port()
        q_read = qmem.read_port()
        m.d.comb += [w_read.addr.eq((o_ch << gb) | g), w_read.en.eq(enable), q_read.addr.eq(o_ch),
                     q_read.en.eq(enable)]

        # Stage 1: memory outputs; the products register into stage 2 (one multiplier per lane).
        s1_valid, s1_first, s1_last = Signal(), Signal(reset_less=True), Signal(reset_less=True)
        s1_inside = Signal(lanes, reset_less=True)
        with m.If(enable):
            m.d.sync += [s1_valid.eq(issue), s1_first.eq(g == 0), s1_last.eq(g == groups - 1)]
            m.d.sync += [s1_inside[j].eq(ok) for j, (ok, _) in enumerate(inside)]
        prod_bits = p.act_bits + p.weight_bits
        s2_valid, s2_first, s2_last = Signal(), Signal(reset_less=True), Signal(reset_less=True)
        s2_q = Signal(p.quant_layout, reset_less=True)
        products = [Signal(signed(prod_bits), name=f"prod{j}", reset_less=True) for j in range(lanes)]
        with m.If(enable):
            m.d.sync += [s2_valid.eq(s1_valid), s2_first.eq(s1_first), s2_last.eq(s1_last), s2_q.eq(q_read.data)]
            for j, (_, port) in enumerate(inside):
                weight = w_read.data[j * p.weight_bits:(j + 1) * p.weight_bits].as_signed()
                m.d.sync += products[j].eq(Mux(s1_inside[j], port.data, 0) * weight)

        # Stage 3: the group's sum into the accumulator; complete after the output's last group.
        acc = Signal(signed(p.acc_bits), reset_less=True)
        acc_valid = Signal()
        acc_q = Signal(p.quant_layout, reset_less=True)
        total = sum(products[1:], products[0])
        with m.If(enable):
            m.d.sync += acc_valid.eq(s2_valid & s2_last)
            with m.If(s2_valid):
                m.d.sync += [acc.eq(Mux(s2_first, 0, acc) + total), acc_q.eq(s2_q)]
        q_valid, q_y, _ = requant_stages(m, enable, acc_valid, acc, acc_q.out_mult, acc_q.out_shift, acc_q.bias,
                                         p.out_bits, p.relu)
        m.d.comb += [self.o.valid.eq(q_valid), self.o.payload.eq(q_y)]
        return m
