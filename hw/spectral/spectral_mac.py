"""SPEC2 sparse spectral MAC: P lanes multiply scheduled kernel nonzeros with a banked input spectrum.

The math is `hw.spec.spectral.fixed.spectral_mac` (exact accumulators, the `acc` stage of
`spectral_conv_fixed_stages`); the entry order is the bank-conflict-free `Schedule` of docs/formats.md
(`stream_entries`): groups of P entries with distinct banks, bank = bin index mod B, sorted by bank, padding
entries of value 0 whose index is their bank. Every group is taken in one cycle, never stalling on banks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.params import check_ints, require_params, to_int
from ..spec.spectral.fixed import accumulator_bits
from ..spec.spectral.geometry import DEFAULT_N, bins, check_fft_size
from .select import pick, select


def canonical_bins(n: int) -> list[int]:
    """Linear half-spectrum indices k1 (n/2 + 1) + k2 of the canonical bins, ascending (34 at n = 8):
    columns 1..n/2-1 whole, columns 0 and n/2 rows 0..n/2 only (as `hw.spec.spectral.geometry.canonical_mask`)."""
    cols = n // 2 + 1
    return [k1 * cols + k2 for k1 in range(n) for k2 in range(cols) if 0 < k2 < n // 2 or k1 <= n // 2]


@dataclass(frozen=True)
class SpectralMacParams:
    """Structural parameters of one `SpectralMac`; validated on construction, hashable.

    n: FFT size (a power of two, 4..256). p: lanes. b: spectrum banks, a power of two (bank and address
    are then bit fields of the bin index) with p <= b <= the n (n/2 + 1) bins. max_c_in: input channels
    one output bin sums over. slots: spectra one buffer holds, addressed by the streams' `chan` field
    (default max_c_in: one tile of every channel; `SpectralConv` keeps a whole layer, slot t C_in + i).
    data_bits, weight_bits, acc_bits: `SpectralFixed` widths (defaults 18, 16, 45); acc_bits must hold
    data + weight + 1 + ceil(log2 max_c_in) bits so the sums stay exact. outs: output channels in flight, each
    with its own pair of accumulator buffers and output stream (1..16; `entry_layout` then names the group's
    output stream in `path`).
    """

    n: int = DEFAULT_N
    p: int = 4
    b: int = 8
    max_c_in: int = 64
    data_bits: int = 18
    weight_bits: int = 16
    acc_bits: int = 45
    slots: int | None = None
    outs: int = 1

    def __post_init__(self) -> None:
        if self.slots is None:
            object.__setattr__(self, "slots", self.max_c_in)
        object.__setattr__(self, "n", check_fft_size(self.n))
        check_ints(self, (("p", 1, None), ("max_c_in", 1, None), ("data_bits", 2, 30), ("weight_bits", 2, 16),
                          ("outs", 1, 16)))
        for name in ("b", "acc_bits", "slots"):  # their bounds come from the fields above
            object.__setattr__(self, name, to_int(name, getattr(self, name)))
        if self.b < self.p or self.b > self.bins or self.b & (self.b - 1):
            raise ValueError(f"b must be a power of two in p={self.p}..{self.bins} (the bins at n={self.n}), "
                             f"got {self.b}")
        if self.slots < self.max_c_in:
            raise ValueError(f"slots must be at least max_c_in={self.max_c_in}, got {self.slots}")
        if self.acc_bits < self.min_acc_bits:
            raise ValueError(f"acc_bits must be at least data + weight + 1 + ceil(log2 max_c_in) = "
                             f"{self.min_acc_bits}, got {self.acc_bits}")

    @property
    def bins(self) -> int:
        """Bins of the rfft2 half: n (n/2 + 1)."""
        return bins(self.n)

    @property
    def min_acc_bits(self) -> int:
        return accumulator_bits(self.data_bits, self.weight_bits, self.max_c_in)

    @property
    def index_bits(self) -> int:
        return (self.bins - 1).bit_length()

    @property
    def bank_bits(self) -> int:
        return (self.b - 1).bit_length()

    @property
    def bank_depth(self) -> int:
        """Bins per bank and input channel: ceil(bins / b)."""
        return -(-self.bins // self.b)

    @property
    def chan_bits(self) -> int:
        return max(1, (self.slots - 1).bit_length())

    @property
    def canonical(self) -> list[int]:
        return canonical_bins(self.n)

    @property
    def write_layout(self) -> data.StructLayout:
        """One input spectrum bin (stream `x`); Amaranth packs the first field at the LSB."""
        return data.StructLayout({
            "re": signed(self.data_bits), "im": signed(self.data_bits),
            "index": self.index_bits, "chan": self.chan_bits, "last": 1,
        })

    def lane_layout_for(self, chan_bits: int) -> data.StructLayout:
        """One kernel entry with its input channel (or spectrum slot) in `chan_bits` bits."""
        return data.StructLayout({"index": self.index_bits, "re": signed(self.weight_bits),
                                  "im": signed(self.weight_bits), "chan": chan_bits})

    @property
    def lane_layout(self) -> data.StructLayout:
        """One lane's entry: bin index, int16 weight, and the spectrum slot it reads (`chan`)."""
        return self.lane_layout_for(self.chan_bits)

    @property
    def path_bits(self) -> int:
        """Width of an entry's `path` (0 with one output stream: the field is then absent)."""
        return (self.outs - 1).bit_length()

    @property
    def entry_layout(self) -> data.StructLayout:
        """One group of p kernel entries (stream `w`), lane 0 lowest."""
        path = {"path": self.path_bits} if self.outs > 1 else {}
        return data.StructLayout({
            "lanes": data.ArrayLayout(self.lane_layout, self.p), "last_out": 1, "last_tile": 1, **path,
        })

    @property
    def out_layout(self) -> data.StructLayout:
        """One accumulated canonical bin (stream `o`)."""
        return data.StructLayout({"re": signed(self.acc_bits), "im": signed(self.acc_bits), "last": 1})

    @property
    def latency(self) -> int:
        """Clock edges from a group's entry handshake to the edge its sums are written, with no stalls."""
        return 6

    def lane_banks(self, lane: int) -> range:
        """Banks lane `lane` can meet in a group sorted by bank with distinct banks: lane..lane + b - p."""
        return range(lane, lane + self.b - self.p + 1)

    def describe(self) -> dict[str, Any]:
        return {"n": self.n, "p": self.p, "b": self.b, "max_c_in": self.max_c_in, "data_bits": self.data_bits,
                "weight_bits": self.weight_bits, "acc_bits": self.acc_bits, "slots": self.slots, "outs": self.outs}


def _times(value: Any, const: int) -> Any:
    """value * const for a constant const >= 0 as a sum of shifted copies of value: an address computation that
    synthesis might otherwise put on a DSP block (yosys maps a `$mul` by a constant like any other)."""
    terms = [value << shift for shift in range(const.bit_length()) if const >> shift & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0, 1)


class SpectralMac(wiring.Component):
    """Spectra and kernel groups in, per output channel the exact accumulated canonical bins out.

    Stream `x` (`params.write_layout`): one input spectrum bin per beat, `re`/`im` signed data_bits,
    `index` its linear half-spectrum index k1 (n/2 + 1) + k2, `chan` its input channel (its slot, below
    `slots`, when a buffer holds more than one tile); `last` ends the tile (every input channel written).
    Any order; every canonical bin of channels 0..C_in-1 must be written (other bins may be, and are never
    read). The bins sit in b banks (bank = index mod b, address = index div b) of a double buffer: a tile
    loads while the previous one is multiplied; `x` stalls while both buffers hold tiles.

    `ready_slots` (a level, 0 when unused) lets groups start on the buffer `x` is still filling: a group whose
    lanes' `chan` are all below it goes as if its buffer were full. The feeder raises it only to a bound below
    which every slot is completely written (on the edge of the slot's last write, or later) and lowers it to 0
    with `last`.

    Stream `w` (`params.entry_layout`): one group of p entries per beat, as `stream_entries` lays them
    out: lane j gets slot j of the group (`index`, int16 `re`, `im`, and `chan`, the entry's input channel,
    i.e. the spectrum slot it reads; padding: value 0, index = its bank). A group may take entries of several
    kernels of its output channel, each lane reading its own slot. `last_out` marks the last group of an
    output channel: its accumulated spectrum is then complete and goes out on `o`. `last_tile` (with
    `last_out`) marks the tile's last group: the tile's spectrum buffer is freed. The stream runs output
    channel after output channel as the schedule does, one tile after the other. An output channel with no
    entries at all still needs a beat (all lanes padding) to carry `last_out`. Groups violating the schedule's
    rules (two lanes on one bank, slots not sorted by bank) are outside the format.

    With `outs` > 1 each entry names in `path` which of `outs` output streams its channel goes to, `o` is an
    array of them, and every path has its own pair of accumulator buffers and drain: channels of different paths
    accumulate back to back and drain side by side (`SpectralConv` feeds a block of `outs` channels per tile).

    Stream `o` (`params.out_layout`): per output channel, its canonical bins in ascending index order
    (`canonical_bins`), `re`/`im` the exact acc_bits sums of X_i[k] W[o, i][k] (the golden `acc` stage;
    bins no entry touched are 0), `last` on the final bin.

    Pipeline: S0 holds the group (`w.ready` = S0 empty or moving on); it moves when its tile's spectrum
    is loaded and its accumulator buffer is free, reading each lane's bin from its bank (each bank's
    address from the one lane on it; a lane can only meet banks lane..lane + b - p, so with p = b there is
    no crossbar). S1 picks each lane's bank output into a register; M1 multiplies it: four exact real products
    per lane (4 p multipliers, DSP blocks on ECP5), registered as they leave the multipliers. S2 combines them into
    the complex product and routes each lane's product to its bin's accumulator bank. S3 reads the old sum
    (an asynchronous read at S3's registered bin), adds and writes; a write is seen by the next cycle's
    read, so back-to-back updates of one bin see each other. The spectrum buffers are block RAMs; the
    accumulators (per bank, both buffers) are small LUT RAMs with two asynchronous read ports, S3's and the
    drain's; `o`'s payload is a register after the drain's bank mux. The accumulators are double-buffered,
    with a valid bit per bin so a buffer is cleared in one cycle when
    drained. Draining takes one cycle per canonical bin (34 at n = 8) and starts `latency` edges after
    the channel's last group, so while one output channel drains the next one must take about 34 + 6
    groups or `w` stalls at the start of the channel after it until the buffer is free (small C_in at
    large p). Otherwise, with the tile's spectrum loaded ahead on `x`, one group per cycle.
    """

    def __init__(self, params: SpectralMacParams):
        require_params(self, params, SpectralMacParams)
        self.params = params
        super().__init__({
            "x": In(stream.Signature(params.write_layout)),
            "w": In(stream.Signature(params.entry_layout)),
            "ready_slots": In(range(params.slots + 1)),
            "o": Out(stream.Signature(params.out_layout)) if params.outs == 1
            else Out(stream.Signature(params.out_layout)).array(params.outs),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lb, depth, db, ab = p.bank_bits, p.bank_depth, p.data_bits, p.acc_bits
        lanes, banks = range(p.p), range(p.b)
        # Banks each bank's lane may come from (the inverse of lane_banks).
        bank_lanes = {k: [j for j in lanes if k in p.lane_banks(j)] for k in banks}

        def bank_of(index):
            return index[:lb] if lb else Const(0, 1)

        def addr_of(index):
            return index[lb:]

        # --- spectrum banks: double buffer of `slots` spectra x depth words per bank -----------------------
        smems = []
        for k in banks:
            m.submodules[f"spectrum{k}"] = mem = Memory(shape=2 * db, depth=2 * p.slots * depth, init=[])
            smems.append(mem)
        s_full = Signal(2)
        w_sel = Signal()  # buffer `x` fills
        r_sel = Signal()  # buffer S0 reads

        x = self.x.payload
        x_accept = Signal()
        m.d.comb += [self.x.ready.eq(~s_full.bit_select(w_sel, 1)), x_accept.eq(self.x.valid & self.x.ready)]
        for k, mem in enumerate(smems):
            port = mem.write_port()
            m.d.comb += [
                port.addr.eq(Mux(w_sel, p.slots * depth, 0) + _times(x.chan, depth) + addr_of(x.index)),
                port.data.eq(Cat(x.re, x.im)),
                port.en.eq(x_accept & (bank_of(x.index) == k)),
            ]
        with m.If(x_accept & x.last):
            m.d.sync += w_sel.eq(~w_sel)
            for buf in (0, 1):
                with m.If(w_sel == buf):
                    m.d.sync += s_full[buf].eq(1)

        # --- S0: the group waiting for its spectrum and accumulator buffer -----------------------------------
        # Per output stream (path) a pair of accumulator buffers, filled and drained in turn.
        paths = range(p.outs)
        a_busy = [Signal(2, name=f"a_busy{j}") for j in paths]  # buffer sealed (its last group taken), until drained
        a_done = [Signal(2, name=f"a_done{j}") for j in paths]  # ... and its last products written: drain it
        a_sel = [Signal(name=f"a_sel{j}") for j in paths]  # the path's buffer groups accumulate into
        s0_valid = Signal()
        s0 = Signal(p.entry_layout, reset_less=True)  # data: every use is qualified by s0_valid
        s0_path = s0.path if p.outs > 1 else Const(0, 1)

        s0_sel = pick(a_sel, s0_path)
        # On the buffer `x` fills, a group goes once every slot its lanes read is written.
        s0_ready = Cat(*(lane.chan < self.ready_slots for lane in s0.lanes)).all()
        go = Signal()
        m.d.comb += [
            go.eq(s0_valid & (s_full.bit_select(r_sel, 1) | ((w_sel == r_sel) & s0_ready))
                  & ~pick([a_busy[j].bit_select(a_sel[j], 1) for j in paths], s0_path)),
            self.w.ready.eq(~s0_valid | go),
        ]
        with m.If(self.w.valid & self.w.ready):
            m.d.sync += [s0_valid.eq(1), s0.eq(self.w.payload)]
        with m.Elif(go):
            m.d.sync += s0_valid.eq(0)
        with m.If(go & s0.last_out):
            for j in paths:
                with m.If(s0_path == j):
                    m.d.sync += a_sel[j].eq(~a_sel[j])
                    for buf in (0, 1):
                        with m.If(a_sel[j] == buf):
                            m.d.sync += a_busy[j][buf].eq(1)
        with m.If(go & s0.last_tile):
            # The reads of this group happen on this very edge, so the buffer is free after it.
            m.d.sync += r_sel.eq(~r_sel)
            for buf in (0, 1):
                with m.If(r_sel == buf):
                    m.d.sync += s_full[buf].eq(0)

        # Each lane reads its own slot (a group may take entries of several kernels): the bank's address is its
        # lane's slot and bin, in the buffer S0 reads.
        s_read = []
        s0_index = [lane.index for lane in s0.lanes]
        s0_addr = [_times(lane.chan, depth) + addr_of(lane.index) for lane in s0.lanes]
        for k, mem in enumerate(smems):
            port = mem.read_port()
            addr = _on_bank(s0_index, bank_lanes[k], k, bank_of, lambda j: s0_addr[j])
            m.d.comb += [port.addr.eq(Mux(r_sel, p.slots * depth, 0) + addr), port.en.eq(go)]
            s_read.append(port.data)

        # The pipeline's data registers (entries, words, products, sums on their way) have no reset: it would put
        # about two thousand flip-flops on the chip-wide reset net (the abort's, docs/architecture.md), and every
        # use is qualified by a valid bit that has one.
        # --- S1: each lane picks its bank's word, registered ----------------------------------------------------
        # The block RAMs' outputs are unregistered (a slow clock-to-output), and their depth makes a row mux
        # behind them: that and the lane's bank mux get a cycle of their own, away from the multipliers.
        s1_valid, s1_sel, s1_last = Signal(), Signal(), Signal()
        s1_path, m1_path, s2_path, s3_path = (Signal(max(1, p.path_bits), name=f"{st}_path")
                                              for st in ("s1", "m1", "s2", "s3"))
        s1_lane = [Signal(p.lane_layout, name=f"s1_lane{j}", reset_less=True) for j in lanes]
        m.d.sync += [s1_valid.eq(go), s1_sel.eq(s0_sel), s1_last.eq(go & s0.last_out), s1_path.eq(s0_path)]
        m.d.sync += [s1_lane[j].eq(s0.lanes[j]) for j in lanes]
        m1_valid, m1_sel, m1_last = Signal(), Signal(), Signal()
        m1_lane = [Signal(p.lane_layout, name=f"m1_lane{j}", reset_less=True) for j in lanes]
        m1_word = [Signal(2 * db, name=f"m1_word{j}", reset_less=True) for j in lanes]
        m.d.sync += [m1_valid.eq(s1_valid), m1_sel.eq(s1_sel), m1_last.eq(s1_last), m1_path.eq(s1_path)]
        m.d.sync += [m1_lane[j].eq(s1_lane[j]) for j in lanes]
        # A balanced mux tree over the lane's banks: it is on the path from the spectrum memories to the DSPs.
        m.d.sync += [m1_word[j].eq(select(bank_of(s1_lane[j].index), {k: s_read[k] for k in p.lane_banks(j)}))
                     for j in lanes]

        # --- M1: the four real products of each lane, registered as they leave the multipliers ---------------
        # Nothing but a flip-flop hangs on a DSP output. Combining the products and routing them to the banks (a
        # crossbar) happens in S2, a register away from the DSP row, which keeps that row's routing free (a
        # crossbar fed straight by the DSP outputs packed so much logic around them that nextpnr could not route
        # the ECP5 build).
        pb = db + p.weight_bits  # an exact signed product
        s2_valid, s2_sel, s2_last = Signal(), Signal(), Signal()
        s2_index = [Signal(p.index_bits, name=f"s2_index{j}", reset_less=True) for j in lanes]
        s2_rr, s2_ii, s2_ri, s2_ir = ([Signal(signed(pb), name=f"s2_{part}{j}", reset_less=True) for j in lanes]
                                      for part in ("rr", "ii", "ri", "ir"))
        m.d.sync += [s2_valid.eq(m1_valid), s2_sel.eq(m1_sel), s2_last.eq(m1_last), s2_path.eq(m1_path)]
        for j in lanes:
            xr, xi = m1_word[j][:db].as_signed(), m1_word[j][db:].as_signed()
            wr, wi = m1_lane[j].re, m1_lane[j].im
            m.d.sync += [s2_index[j].eq(m1_lane[j].index),
                         s2_rr[j].eq(xr * wr), s2_ii[j].eq(xi * wi), s2_ri[j].eq(xr * wi), s2_ir[j].eq(xi * wr)]

        # --- S2: complex products, routed to their accumulator banks -------------------------------------------
        prod_r = [s2_rr[j] - s2_ii[j] for j in lanes]
        prod_i = [s2_ri[j] + s2_ir[j] for j in lanes]
        # --- accumulators: per bank a memory of both buffers' sums (LUT RAM: 2 depth words) -----------------------
        # Both read ports are asynchronous, each reading at an address that is already a register: S3's bin for
        # the read-modify-write (so a write on one edge is seen by the read of the next cycle, with no bypass
        # logic), the drain's bin for the output, whose register sits after the bank mux. With synchronous
        # ports instead, the drain's bank mux and valid gating were logic between the memories and `o`.
        # amems[j][k], valid[j][buf][k]: path j's bank k; bit a of valid: bin a b + k of buffer buf holds a sum
        # (otherwise it counts as 0).
        amems = [[Memory(shape=2 * ab, depth=2 * depth, init=[]) for k in banks] for j in paths]
        for j in paths:
            for k in banks:
                m.submodules[f"acc{k}" if p.outs == 1 else f"acc{j}_{k}"] = amems[j][k]
        valid = [[[Signal(depth, name=f"valid{j}_{buf}_{k}") for k in banks] for buf in (0, 1)] for j in paths]

        s3_valid, s3_sel, s3_last = Signal(), Signal(), Signal()
        m.d.sync += [s3_valid.eq(s2_valid), s3_sel.eq(s2_sel), s3_last.eq(s2_last), s3_path.eq(s2_path)]
        s3_hit = [Signal(name=f"s3_hit{k}") for k in banks]
        s3_addr = [Signal(range(depth), name=f"s3_addr{k}", reset_less=True) for k in banks]
        s3_pr = [Signal(signed(ab), name=f"s3_pr{k}", reset_less=True) for k in banks]
        s3_pi = [Signal(signed(ab), name=f"s3_pi{k}", reset_less=True) for k in banks]
        drain_read = [[] for j in paths]  # drain_read[j][k]
        for k in banks:
            src = bank_lanes[k]
            # With p = b lane k is always on bank k; otherwise a bank may be left free by the group.
            on_bank = Cat(bank_of(s2_index[j]) == k for j in src).any() if p.p < p.b else 1
            s2_addr = _on_bank(s2_index, src, k, bank_of, lambda j: addr_of(s2_index[j]))
            m.d.sync += [s3_hit[k].eq(s2_valid & on_bank), s3_addr[k].eq(s2_addr),
                         s3_pr[k].eq(_on_bank(s2_index, src, k, bank_of, lambda j: prod_r[j])),
                         s3_pi[k].eq(_on_bank(s2_index, src, k, bank_of, lambda j: prod_i[j]))]
            # Whether the bin holds a sum, found a stage early (its path, buffer and bit, with several paths seven
            # LUT levels in front of the adder bounded the build's clock at 40.7 MHz): the bit as it is, or being
            # set by S3's write on this edge. Nothing else changes it meanwhile: a buffer's bits are cleared when
            # its drain ends, and the MAC writes into it again only after a group has gone through S0 to S2.
            # `s3_on[k]`: S3's path one-hot, a copy per bank for the write enables and the read's select.
            s3_old = Signal(name=f"s3_old{k}")
            s3_on = Signal(p.outs, name=f"s3_on{k}")
            same = (s3_hit[k] & (s3_path == s2_path) & (s3_sel == s2_sel) & (s3_addr[k] == s2_addr))
            m.d.sync += [s3_old.eq(pick([Mux(s2_sel, valid[j][1][k], valid[j][0][k]) for j in paths], s2_path)
                                   .bit_select(s2_addr, 1) | same),
                         s3_on.eq(Const(1, p.outs) << s2_path)]

            # --- S3: read the old sum (from S3's path), add and write back -------------------------------------
            addr = Mux(s3_sel, depth, 0) + s3_addr[k]
            mac_reads, writes = [], []
            for j in paths:
                writes.append(amems[j][k].write_port())
                mac_reads.append(amems[j][k].read_port(domain="comb"))
                drain_read[j].append(amems[j][k].read_port(domain="comb"))
                m.d.comb += [mac_reads[j].addr.eq(addr), writes[j].addr.eq(addr),
                             writes[j].en.eq(s3_hit[k] & s3_on[j])]
            old_word = mac_reads[0].data
            for j in paths[1:]:
                old_word = Mux(s3_on[j], mac_reads[j].data, old_word)
            old_r = Mux(s3_old, old_word[:ab].as_signed(), 0)
            old_i = Mux(s3_old, old_word[ab:].as_signed(), 0)
            total = Cat((old_r + s3_pr[k])[:ab], (old_i + s3_pi[k])[:ab])
            m.d.comb += [write.data.eq(total) for write in writes]
            for j in paths:
                for buf in (0, 1):
                    with m.If(s3_hit[k] & (s3_sel == buf) & (s3_path == j)):
                        m.d.sync += valid[j][buf][k].bit_select(s3_addr[k], 1).eq(1)
        with m.If(s3_last):
            for j in paths:
                for buf in (0, 1):
                    with m.If((s3_sel == buf) & (s3_path == j)):
                        m.d.sync += a_done[j][buf].eq(1)

        # --- drain, per path: the canonical bins of a finished buffer onto its `o`, then the buffer is free ----
        # `o`'s payload is a register (the bin's sum, or 0 for a bin no entry touched) loaded on `advance`,
        # which is when the synchronous read it replaces would have sampled the memories.
        canon = p.canonical
        outs = [self.o] if p.outs == 1 else list(self.o)
        for j, out in enumerate(outs):
            d_sel = Signal(name=f"d_sel{j}")
            d_count = Signal(range(len(canon)), name=f"d_count{j}")
            d_bin = Signal(p.index_bits, name=f"d_bin{j}")
            m.d.comb += d_bin.eq(Array(Const(q, p.index_bits) for q in canon)[d_count])
            o_valid, o_last = Signal(name=f"o_valid{j}"), Signal(name=f"o_last{j}")
            o_re = Signal(signed(ab), name=f"o_re{j}", reset_less=True)
            o_im = Signal(signed(ab), name=f"o_im{j}", reset_less=True)
            advance, issue = Signal(name=f"advance{j}"), Signal(name=f"issue{j}")
            m.d.comb += [advance.eq(~o_valid | out.ready), issue.eq(advance & a_done[j].bit_select(d_sel, 1))]
            for port in drain_read[j]:
                m.d.comb += port.addr.eq(Mux(d_sel, depth, 0) + addr_of(d_bin))
            d_bank = bank_of(d_bin)
            d_valid = Array(Mux(d_sel, valid[j][1][k], valid[j][0][k]) for k in banks)[d_bank] \
                .bit_select(addr_of(d_bin), 1)
            word = Array(port.data for port in drain_read[j])[d_bank]
            with m.If(advance):
                m.d.sync += [o_valid.eq(issue), o_last.eq(d_count == len(canon) - 1),
                             o_re.eq(Mux(d_valid, word[:ab].as_signed(), 0)),
                             o_im.eq(Mux(d_valid, word[ab:].as_signed(), 0))]
            with m.If(issue):
                m.d.sync += d_count.eq(d_count + 1)
                with m.If(d_count == len(canon) - 1):
                    m.d.sync += [d_count.eq(0), d_sel.eq(~d_sel)]
                    for buf in (0, 1):
                        with m.If(d_sel == buf):
                            m.d.sync += [a_done[j][buf].eq(0), a_busy[j][buf].eq(0)]
                            m.d.sync += [valid[j][buf][k].eq(0) for k in banks]
            m.d.comb += [out.valid.eq(o_valid), out.payload.re.eq(o_re), out.payload.im.eq(o_im),
                         out.payload.last.eq(o_last)]
        return m


def _on_bank(indices: list[Any], src: list[int], bank: int, bank_of: Callable[[Any], Any],
             value: Callable[[int], Any]) -> Any:
    """value(j) for whichever lane j of `src` is on `bank` (its bin index indices[j] is; src[0] when none is):
    a mux chain on the lanes' bank fields, no logic at all when only one lane can reach the bank."""
    result = value(src[0])
    for j in src[1:]:
        result = Mux(bank_of(indices[j]) == bank, value(j), result)
    return result
