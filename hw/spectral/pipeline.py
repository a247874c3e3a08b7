"""SPEC2 spectral convolution layer: `SpectralConv` chains the stages into one streaming block.

Dataflow of one layer (the operator and its fixed point are `hw.spec.spectral.fixed.spectral_conv_fixed`):

    x ─ Tiler ─ Fft2d ─ tag (bin, tile, channel) ─┐              ┌ IfftInput ─ Ifft2d ─ OverlapAdd ─ map ┐
                                                  SpectralMac ─┤  ...  one inverse path per output   ├─ o
    w ─ KernelReplay (outs channels, per tile) ───┘              └ channel in flight (outs)   quant ─┘    ┘

The MAC sums over input channels tile by tile, while overlap-add wants one output channel's tiles in raster
order. So the loop nest is output channels outside, tile inside: the forward FFT writes the spectra of every
tile of every input channel of the layer into the MAC's spectrum buffer (slot t C_in + i, double-buffered: the
next layer loads while this one computes), and `KernelReplay` holds a block of `outs` output channels' kernel
groups and replays them once per tile, channel after channel. Each output channel's groups thus cross the input
stream once per layer, and each inverse path sees one output channel at a time, as it was built to: channel o
runs on path o mod outs. With more than one path each ends in a buffer of one whole map, and `o` takes the
block's maps from them in channel order, so the streams are those of one path.

Cost per layer at full rate (`cycle_model`): the load takes C_in T F cycles, F = max(L, N/2 + 1) N the forward
FFT's period (the tiler sends a tile's L rows of data, not its zero rows; the row pass transforms those, the
column pass the N/2 + 1 columns of the half spectrum, one value a cycle), and the compute starts as soon as the
last input channel's first tile is through the forward FFT (the tagger raises the MAC's `ready_slots` tile by
tile), so only (C_in - 1) T F of the load and that FFT's latency come first; the compute, per
block of channels, T max(sum of G_o, N^2), G_o the output channel's groups, N^2 the inverse FFT's period per
tile, so `outs` paths divide what the inverse FFT bounds by up to `outs`; layers overlap load with compute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.spec.spectral.engine import SHIFT_BITS, layer_cycles
from hw.spec.spectral.fixed import SpectralFixed
from hw.spec.spectral.geometry import DEFAULT_N, OaaParams
from hw.spec.spectral.layer import SpectralLayer

from ..pool import PostParams, PostStage
from ..spec.params import check_ints, require_params, to_int
from .fft import Fft2d, FftParams, Ifft2d
from .ifft_input import IfftInput, IfftInputParams
from .overlap_add import OverlapAdd, OverlapAddParams
from .spectral_mac import SpectralMac, SpectralMacParams, canonical_bins
from .tiler import Tiler, TilerParams


@dataclass(frozen=True)
class SpectralConvParams:
    """Structural parameters of `SpectralConv`; validated on construction (errors name the field), hashable.

    n, k, l, padding: the OaA geometry (FFT size, kernel size the layers were made for, tile size, "same" or
    "valid"). relu: clamp outputs at 0. p, b: MAC lanes and spectrum banks (the host's schedule must use the
    same). max_c_in, max_c_out, max_height, max_width: the largest layer; actual sizes are run-time `cfg`
    values. max_groups: kernel groups of one output channel the replay buffer holds (default the worst case,
    max_c_in times the canonical bins: one entry per group). spec: the fixed-point widths (`SpectralFixed`).
    outs: output channels in flight (1..min(16, max_c_out)): the MAC's output streams, each with its own inverse
    path (IFFT input, inverse FFT, overlap-add) and, with more than one, an output buffer of one whole map.
    post: a post stage (`hw.pool.PostStage`: crop, then 2 x 2 max-pool or none) behind each path, before its
    buffer, set per layer by the `post` stream; `o` then gives the maps cropped and pooled, so the paths' buffers
    empty a pooled map's quarter of the values (the accelerator's engine has it).
    """

    n: int = DEFAULT_N
    k: int = 3
    l: int = 6  # noqa: E741 (the paper's name)
    padding: str = "same"
    relu: bool = False
    p: int = 4
    b: int = 8
    max_c_in: int = 16
    max_c_out: int = 16
    max_height: int = 28
    max_width: int = 28
    max_groups: int | None = None
    spec: SpectralFixed = SpectralFixed()
    outs: int = 1
    post: bool = False

    def __post_init__(self) -> None:
        for name in ("n", "k", "l", "p", "b"):  # bounded by OaaParams and SpectralMacParams, below
            object.__setattr__(self, name, to_int(name, getattr(self, name)))
        check_ints(self, (("max_c_in", 1, None), ("max_c_out", 1, None), ("max_height", 1, None),
                          ("max_width", 1, None)))
        check_ints(self, (("outs", 1, 16),))
        if self.outs > self.max_c_out:
            raise ValueError(f"outs must be at most max_c_out={self.max_c_out} (output channels in flight), "
                             f"got {self.outs}")
        for name in ("relu", "post"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.post and min(self.max_height, self.max_width) < 2:
            raise ValueError("max_height and max_width must be at least 2 with post (the pool's window)")
        if not isinstance(self.spec, SpectralFixed):
            raise ValueError(f"spec must be a SpectralFixed, got {type(self.spec).__name__}")
        OaaParams(self.n, self.k, self.l, self.padding)  # its errors name n, k, l or padding
        if self.max_c_in > self.spec.max_c_in:
            raise ValueError(f"max_c_in must be at most spec.max_c_in={self.spec.max_c_in} (the accumulator "
                             f"width is sized for it), got {self.max_c_in}")
        if self.padding == "valid" and min(self.max_height, self.max_width) < self.k:
            raise ValueError(f"max_height and max_width must be at least k={self.k} for 'valid' padding")
        if self.max_groups is None:
            object.__setattr__(self, "max_groups", self.max_c_in * len(canonical_bins(self.n)))
        check_ints(self, (("max_groups", 1, None),))
        self.mac  # noqa: B018 (p and b are checked there, the errors naming them)
        self.fft  # noqa: B018 (the forward plan must exist for these widths)

    # --- the stages' parameters -----------------------------------------------------------------------------
    @property
    def oaa(self) -> OaaParams:
        return OaaParams(self.n, self.k, self.l, self.padding)

    @property
    def max_tiles(self) -> int:
        """Tiles of the largest map: ceil(max_height / l) ceil(max_width / l)."""
        return -(-self.max_height // self.l) * -(-self.max_width // self.l)

    @property
    def tile_bits(self) -> int:
        """Width of a tile row or column count (up to ceil(max / l))."""
        return max(1, (-(-max(self.max_height, self.max_width) // self.l)).bit_length())

    @property
    def tiler(self) -> TilerParams:
        return TilerParams(self.n, self.l, self.spec.act_bits, self.max_height, self.max_width)

    @property
    def fft(self) -> FftParams:
        """Both FFTs' parameters: the forward one takes the tiler's L rows of each tile (the rest are zero)."""
        return FftParams.from_spec(self.spec, self.n, rows=self.l)

    @property
    def acc_bits(self) -> int:
        """The MAC's accumulator width: `SpectralFixed.acc_bits` for the engine's own max_c_in channels (38 bits on
        LeNet-5's 6, against the format's 45 for 1024). The sums are exact either way, so every output is the same;
        the narrower accumulators are LUT RAM and adders the engine does not need."""
        return replace(self.spec, max_c_in=self.max_c_in).acc_bits

    @property
    def mac(self) -> SpectralMacParams:
        return SpectralMacParams(n=self.n, p=self.p, b=self.b, max_c_in=self.max_c_in,
                                 data_bits=self.spec.data_bits, weight_bits=self.spec.weight_bits,
                                 acc_bits=self.acc_bits, slots=self.max_c_in * self.max_tiles, outs=self.outs)

    @property
    def ifft_input(self) -> IfftInputParams:
        return IfftInputParams(n=self.n, acc_bits=self.acc_bits, data_bits=self.spec.data_bits)

    @property
    def overlap_add(self) -> OverlapAddParams:
        return OverlapAddParams(self.n, self.l, self.k, self.padding, self.max_height, self.max_width,
                                in_bits=self.spec.data_bits, mult_bits=self.spec.mult_bits,
                                out_bits=self.spec.out_bits, relu=self.relu)

    @property
    def post_stage(self) -> PostParams:
        """Each path's post stage: the largest map, the channels one path takes of the largest layer."""
        return PostParams(self.max_height, self.max_width, -(-self.max_c_out // self.outs), self.spec.out_bits)

    # --- stream layouts --------------------------------------------------------------------------------------
    @property
    def cfg_layout(self) -> data.StructLayout:
        """One beat per layer (fields from the LSB)."""
        return data.StructLayout({
            "height": self.max_height.bit_length(), "width": self.max_width.bit_length(),
            "c_in": self.max_c_in.bit_length(), "c_out": self.max_c_out.bit_length(),
            "mac_shift": unsigned(SHIFT_BITS),
        })

    @property
    def window_layout(self) -> data.StructLayout:
        """One beat of `post` per layer (with `post`): the crop window of the output map and the pool flag."""
        return self.post_stage.window_layout

    @property
    def quant_layout(self) -> data.StructLayout:
        """One beat per output channel: its requantization constants (`QuantParams`)."""
        return data.StructLayout({
            "out_mult": unsigned(self.spec.mult_bits), "out_shift": unsigned(SHIFT_BITS),
            "bias": signed(self.overlap_add.ola_bits + self.spec.mult_bits),
        })

    @property
    def group_layout(self) -> data.StructLayout:
        """One kernel group as stored: p lanes, each an entry and its input channel."""
        lane = self.mac.lane_layout_for(max(1, (self.max_c_in - 1).bit_length()))
        return data.StructLayout({"lanes": data.ArrayLayout(lane, self.p)})

    @property
    def kernel_layout(self) -> data.StructLayout:
        """One beat of `w`: a group, `last` on an output channel's final group."""
        return data.StructLayout({"group": self.group_layout, "last": 1})

    def describe(self) -> dict[str, Any]:
        return {"n": self.n, "k": self.k, "l": self.l, "padding": self.padding, "relu": self.relu, "p": self.p,
                "b": self.b, "max_c_in": self.max_c_in, "max_c_out": self.max_c_out,
                "max_height": self.max_height, "max_width": self.max_width, "max_groups": self.max_groups,
                "act_bits": self.spec.act_bits, "data_bits": self.spec.data_bits,
                "weight_bits": self.spec.weight_bits, "acc_bits": self.acc_bits,
                "out_bits": self.spec.out_bits, "outs": self.outs, "post": self.post, "latency": self.latency,
                "forward_latency": self.fft.forward_latency, "forward_period": self.fft.forward_period}

    @property
    def latency(self) -> int:
        """Cycles of the pipeline behind a layer's last kernel group, but the first band: the forward FFT, the
        MAC, the spectrum read-out (one bin a cycle), the inverse FFT and the last tile's N^2 samples."""
        return (self.fft.forward_latency + self.mac.latency + len(canonical_bins(self.n)) + self.fft.inverse_latency
                + self.n ** 2)


def _tile_count_rom(max_size: int, l: int, bits: int) -> Array:  # noqa: E741
    """ceil(s / l) for s = 0..max_size, a constant table (no divider)."""
    return Array(Const(-(-s // l), bits) for s in range(max_size + 1))


class KernelReplay(wiring.Component):
    """Output channels' kernel groups in, replayed once per tile as `SpectralMac` entries, `outs` channels at a time.

    * `w` (`params.kernel_layout`): per output channel its groups, `last` on the final one, into a ring of
      2 outs slots of max_groups groups, one channel a slot: the next block of channels loads while one is
      replayed.
    * `start` (a one-cycle pulse) with `c_in`, `c_out`, `tile_rows`, `tile_cols` held: replay one layer, its
      c_out channels in blocks of `outs` (the last block may be smaller), each block over the tile_rows x
      tile_cols tiles in raster order, per tile every channel of the block in turn.
    * `o` (`params.mac.entry_layout`): the groups, each lane's `chan` = t c_in + its entry's input channel (the
      spectrum slot of tile t), `path` the channel's place in its block (its MAC output stream), `last_out` on a
      channel's final group of each tile, `last_tile` on the layer's final group.

    One group per cycle while a block is loaded; `busy` is high from `start` to the layer's last group.
    """

    def __init__(self, params: SpectralConvParams):
        require_params(self, params, SpectralConvParams)
        self.params = params
        tile_bits = params.tile_bits
        super().__init__({
            "w": In(stream.Signature(params.kernel_layout)),
            "o": Out(stream.Signature(params.mac.entry_layout)),
            "start": In(1), "c_in": In(params.max_c_in.bit_length()), "c_out": In(params.max_c_out.bit_length()),
            "tile_rows": In(tile_bits), "tile_cols": In(tile_bits), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        depth, outs = p.max_groups, p.outs
        slots = 2 * outs
        m.submodules.groups = mem = Memory(shape=p.group_layout, depth=slots * depth, init=[])
        write, read = mem.write_port(), mem.read_port()
        full = Signal(slots)
        count = [Signal(range(depth + 1), name=f"count{k}") for k in range(slots)]

        def after(slot: Signal, base: Signal) -> tuple[Any, Any]:
            """The slot after `slot` on the ring and its first address, `base` being slot's."""
            wrap = slot == slots - 1
            return Mux(wrap, 0, slot + 1), Mux(wrap, 0, base + depth)

        def step(slot: Signal, base: Signal, frm: tuple[Signal, Signal] | None = None) -> list[Any]:
            """Assignments moving (slot, base) to the slot after `frm` (default: after itself)."""
            nxt, nxt_base = after(*(frm or (slot, base)))
            return [slot.eq(nxt), base.eq(nxt_base)]

        # --- writer: one channel into the next free slot ---------------------------------------------------------
        w_slot, w_base = Signal(range(slots)), Signal(range(slots * depth))
        w_addr = Signal(range(depth))
        take = Signal()
        m.d.comb += [
            self.w.ready.eq(~full.bit_select(w_slot, 1)),
            take.eq(self.w.valid & self.w.ready),
            write.addr.eq(w_base + w_addr),
            write.data.eq(self.w.payload.group),
            write.en.eq(take),
        ]
        with m.If(take):
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(self.w.payload.last):
                m.d.sync += [w_addr.eq(0), *step(w_slot, w_base)]
                for k in range(slots):
                    with m.If(w_slot == k):
                        m.d.sync += [full[k].eq(1), count[k].eq(w_addr + 1)]

        # --- reader: per tile, every group of every channel of the block ----------------------------------------
        running = Signal()
        first, first_base = Signal(range(slots)), Signal(range(slots * depth))  # the block's first slot
        cur, cur_base = Signal(range(slots)), Signal(range(slots * depth))  # the channel being replayed
        g = Signal(range(depth))
        j = Signal(range(outs))  # its place in the block
        tr = Signal.like(self.tile_rows)
        tc = Signal.like(self.tile_cols)
        o = Signal(range(p.max_c_out + outs))  # the block's first output channel
        base = Signal(p.mac.chan_bits)
        last_group = g == Array(count)[cur] - 1
        last_in_block = (j == outs - 1) | (o + j == self.c_out - 1)
        last_tile = (tr == self.tile_rows - 1) & (tc == self.tile_cols - 1)
        last_block = o + outs >= self.c_out

        o_valid = Signal()
        o_last_out, o_last_tile = Signal(), Signal()
        o_base = Signal.like(base)
        o_path = Signal.like(j)
        advance, issue = Signal(), Signal()
        m.d.comb += [
            advance.eq(~o_valid | self.o.ready),
            issue.eq(advance & running & full.bit_select(cur, 1)),
            read.addr.eq(cur_base + g),
            read.en.eq(advance),
            self.busy.eq(running),
        ]
        with m.If(self.start):
            m.d.sync += running.eq(1)
        with m.If(advance):
            m.d.sync += [o_valid.eq(issue), o_last_out.eq(last_group), o_path.eq(j),
                         o_last_tile.eq(last_group & last_in_block & last_tile & last_block), o_base.eq(base)]
        with m.If(issue):
            m.d.sync += g.eq(g + 1)
            with m.If(last_group):
                m.d.sync += [g.eq(0), j.eq(j + 1), *step(cur, cur_base)]
                with m.If(last_in_block):
                    m.d.sync += [j.eq(0), cur.eq(first), cur_base.eq(first_base),
                                 tc.eq(tc + 1), base.eq(base + self.c_in)]
                    with m.If(tc == self.tile_cols - 1):
                        m.d.sync += [tc.eq(0), tr.eq(tr + 1)]
                    with m.If(last_tile):
                        # The block's last read happens on this edge: the writer may refill its slots after.
                        # The next block starts at the slot after this one's last (the channel being read).
                        m.d.sync += [tr.eq(0), base.eq(0), o.eq(o + outs), *step(cur, cur_base),
                                     *step(first, first_base, frm=(cur, cur_base))]
                        for k in range(slots):
                            offset = Mux(first <= k, k - first, k + slots - first)
                            with m.If(offset <= j):
                                m.d.sync += full[k].eq(0)
                        with m.If(last_block):
                            m.d.sync += [o.eq(0), running.eq(0)]

        group = data.View(p.group_layout, read.data)
        payload = self.o.payload
        m.d.comb += [self.o.valid.eq(o_valid), payload.last_out.eq(o_last_out), payload.last_tile.eq(o_last_tile)]
        if outs > 1:
            m.d.comb += payload.path.eq(o_path)
        for k in range(p.p):  # each lane's slot: tile t's spectrum of its input channel
            lane, stored = payload.lanes[k], group.lanes[k]
            m.d.comb += [lane.index.eq(stored.index), lane.re.eq(stored.re), lane.im.eq(stored.im),
                         lane.chan.eq(o_base + stored.chan)]
        return m


class SpectralConv(wiring.Component):
    """A SPEC2 sparse spectral convolution layer in one block, bit-exact with `spectral_conv_fixed`.

    Streams (Amaranth valid/ready; `hw.spectral.streams.encode` builds them from a layer and an input):

    * `cfg` (`params.cfg_layout`): one beat per layer: input height and width (1..max; at least k for
      "valid"), c_in (1..max_c_in), c_out (1..max_c_out), and the layer's `QuantParams.mac_shift`.
    * `x` (signed act_bits): the input map, channel by channel, each H x W in raster order.
    * `w` (`params.kernel_layout`): the layer's kernel groups output channel by output channel, each channel
      its groups as the schedule orders them (`stream_entries`), `last` on its final group (a channel without
      entries sends one group of padding with `last`). Each lane's `chan` is its entry's input channel.
    * `quant` (`params.quant_layout`): one beat per output channel: out_mult, out_shift, bias_q.
    * `o` (signed out_bits): the output map, channel by channel, H_out x W_out in raster order.
    * with `params.post`, `post` (`params.window_layout`): one beat per layer, taken once its compute has started:
      the crop window of each output map and the pool flag; `o` then gives each map's window, pooled when the
      flag is set. `post_busy` is high while a path's post stage still takes the layer's samples (those it
      drops may come after the last value on `o`); the compute path takes its next layer after.

    The forward path (tiler, FFT, tagging) runs one layer ahead of the compute path (replay, MAC, IFFT,
    overlap-add): each takes its own copy of `cfg` from a two-deep queue when it goes idle, and the MAC's
    spectrum buffer is the double buffer between them. The compute path takes its next layer once the
    previous one's last output has left, so a layer's settings never change under data in flight. `loading` is
    high while the forward path has a layer's input to take (its cfg taken, its last spectrum not yet in the
    buffer): once it is low, everything sent on `x` has been taken for the layers whose cfg came before.
    """

    def __init__(self, params: SpectralConvParams):
        require_params(self, params, SpectralConvParams)
        self.params = params
        super().__init__({
            "cfg": In(stream.Signature(params.cfg_layout)),
            "x": In(stream.Signature(signed(params.spec.act_bits))),
            "w": In(stream.Signature(params.kernel_layout)),
            "quant": In(stream.Signature(params.quant_layout)),
            "o": Out(stream.Signature(signed(params.spec.out_bits))),
            "loading": Out(1),
            **({"post": In(stream.Signature(params.window_layout)), "post_busy": Out(1)} if params.post else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n, cols = p.n, p.n // 2 + 1
        m.submodules.tiler = tiler = Tiler(p.tiler)
        m.submodules.fft = fft = Fft2d(p.fft)
        m.submodules.mac = mac = SpectralMac(p.mac)
        m.submodules.replay = replay = KernelReplay(p)
        # One inverse path per output channel in flight (the names of a single path kept from before).
        paths = range(p.outs)
        ifft_inputs = [IfftInput(p.ifft_input) for _ in paths]
        iffts = [Ifft2d(p.fft) for _ in paths]
        oaas = [OverlapAdd(p.overlap_add) for _ in paths]
        for j in paths:
            suffix = "" if p.outs == 1 else str(j)
            m.submodules[f"ifft_input{suffix}"] = ifft_inputs[j]
            m.submodules[f"ifft{suffix}"] = iffts[j]
            m.submodules[f"overlap_add{suffix}"] = oaas[j]
        rows_rom = _tile_count_rom(p.max_height, p.l, p.tile_bits)
        cols_rom = _tile_count_rom(p.max_width, p.l, p.tile_bits)

        # --- cfg: one copy per path ----------------------------------------------------------------------------
        m.submodules.load_cfg = load_q = SyncFIFOBuffered(width=p.cfg_layout.size, depth=2)
        m.submodules.compute_cfg = compute_q = SyncFIFOBuffered(width=p.cfg_layout.size, depth=2)
        m.d.comb += [
            self.cfg.ready.eq(load_q.w_rdy & compute_q.w_rdy),
            load_q.w_en.eq(self.cfg.valid & self.cfg.ready), compute_q.w_en.eq(self.cfg.valid & self.cfg.ready),
            load_q.w_data.eq(self.cfg.payload), compute_q.w_data.eq(self.cfg.payload),
        ]

        # --- forward path: x -> tiler -> FFT -> MAC spectrum buffer ----------------------------------------------
        l_busy = Signal()
        l_cfg = Signal(p.cfg_layout)
        l_rows, l_cols = Signal(p.tile_bits), Signal(p.tile_bits)
        l_maps = Signal.like(l_cfg.c_in)  # tiler cfg beats sent
        m.d.comb += [load_q.r_en.eq(~l_busy), self.loading.eq(l_busy | load_q.r_rdy)]
        with m.If(~l_busy & load_q.r_rdy):
            new = data.View(p.cfg_layout, load_q.r_data)
            m.d.sync += [l_busy.eq(1), l_cfg.eq(load_q.r_data), l_maps.eq(0),
                         l_rows.eq(rows_rom[new.height]), l_cols.eq(cols_rom[new.width])]

        m.d.comb += [
            tiler.cfg.valid.eq(l_busy & (l_maps != l_cfg.c_in)),
            tiler.cfg.payload.height.eq(l_cfg.height), tiler.cfg.payload.width.eq(l_cfg.width),
        ]
        with m.If(tiler.cfg.valid & tiler.cfg.ready):
            m.d.sync += l_maps.eq(l_maps + 1)
        wiring.connect(m, wiring.flipped(self.x), tiler.i)
        wiring.connect(m, tiler.o, fft.i)

        # The FFT emits each tile's half spectrum column-major: bin (k1, k2) with k1 inner, so its linear index
        # k1 cols + k2 steps by cols; the slot of (tile t, channel i) is t c_in + i, stepped by c_in per tile.
        k1 = Signal(range(n))
        k2 = Signal(range(cols))
        index = Signal(p.mac.index_bits)
        t_col, t_row = Signal.like(l_cols), Signal.like(l_rows)
        chan = Signal.like(l_cfg.c_in)
        slot = Signal(p.mac.chan_bits)
        tile_end = (k1 == n - 1) & (k2 == cols - 1)
        map_end = tile_end & (t_col == l_cols - 1) & (t_row == l_rows - 1)
        layer_end = map_end & (chan == l_cfg.c_in - 1)
        m.d.comb += [
            mac.x.valid.eq(fft.o.valid), fft.o.ready.eq(mac.x.ready),
            mac.x.payload.re.eq(fft.o.payload.re), mac.x.payload.im.eq(fft.o.payload.im),
            mac.x.payload.index.eq(index), mac.x.payload.chan.eq(slot), mac.x.payload.last.eq(layer_end),
        ]
        with m.If(mac.x.valid & mac.x.ready):
            m.d.sync += [k1.eq(k1 + 1), index.eq(index + cols)]
            with m.If(k1 == n - 1):
                m.d.sync += [k1.eq(0), k2.eq(k2 + 1), index.eq(k2 + 1)]
            with m.If(tile_end):
                m.d.sync += [k2.eq(0), index.eq(0), t_col.eq(t_col + 1), slot.eq(slot + l_cfg.c_in)]
                with m.If(t_col == l_cols - 1):
                    m.d.sync += [t_col.eq(0), t_row.eq(t_row + 1)]
                # The last channel's tile t is in, so is every channel's: the MAC may start on slots below
                # (t + 1) c_in while the rest of the layer loads.
                with m.If(chan == l_cfg.c_in - 1):
                    m.d.sync += mac.ready_slots.eq(slot + 1)
            with m.If(map_end):
                m.d.sync += [t_row.eq(0), chan.eq(chan + 1), slot.eq(chan + 1)]
            with m.If(layer_end):
                m.d.sync += [chan.eq(0), slot.eq(0), l_busy.eq(0), mac.ready_slots.eq(0)]

        # --- compute path: replay -> MAC -> IFFT input -> IFFT -> overlap-add -> o -------------------------------
        c_busy = Signal()
        c_cfg = Signal(p.cfg_layout)
        start = Signal()
        m.d.comb += compute_q.r_en.eq(~c_busy)
        m.d.sync += start.eq(~c_busy & compute_q.r_rdy)
        with m.If(~c_busy & compute_q.r_rdy):
            new = data.View(p.cfg_layout, compute_q.r_data)
            m.d.sync += [c_busy.eq(1), c_cfg.eq(compute_q.r_data),
                         replay.tile_rows.eq(rows_rom[new.height]), replay.tile_cols.eq(cols_rom[new.width])]
        m.d.comb += [replay.start.eq(start), replay.c_in.eq(c_cfg.c_in), replay.c_out.eq(c_cfg.c_out)]
        wiring.connect(m, wiring.flipped(self.w), replay.w)
        wiring.connect(m, replay.o, mac.w)
        mac_outs = [mac.o] if p.outs == 1 else list(mac.o)
        for j in paths:
            wiring.connect(m, mac_outs[j], ifft_inputs[j].i)
            m.d.comb += ifft_inputs[j].mac_shift.eq(c_cfg.mac_shift)
            wiring.connect(m, ifft_inputs[j].o, iffts[j].i)
            wiring.connect(m, iffts[j].o, oaas[j].i)

        # Overlap-add takes one cfg per output channel: the layer's map size and the channel's `quant` beat.
        # Channel o of a layer runs on path o mod outs (blocks of outs channels, the first on path 0).
        q_sent = Signal.like(c_cfg.c_out)
        q_path = Signal(range(p.outs))
        q_open = c_busy & (q_sent != c_cfg.c_out)
        m.d.comb += self.quant.ready.eq(q_open & Array(oaa.cfg.ready for oaa in oaas)[q_path])
        for j, oaa in enumerate(oaas):
            ocfg = oaa.cfg.payload
            m.d.comb += [
                oaa.cfg.valid.eq(q_open & self.quant.valid & (q_path == j)),
                ocfg.height.eq(c_cfg.height), ocfg.width.eq(c_cfg.width),
                ocfg.out_mult.eq(self.quant.payload.out_mult), ocfg.out_shift.eq(self.quant.payload.out_shift),
                ocfg.bias.eq(self.quant.payload.bias),
            ]
        with m.If(self.quant.valid & self.quant.ready):
            m.d.sync += [q_sent.eq(q_sent + 1), q_path.eq(Mux(q_path == p.outs - 1, 0, q_path + 1))]

        # With `post`, each path's samples go through its own post stage: crop and pool side by side, so what the
        # paths' buffers hold and `o` gives is the pooled maps. Path j takes channels j, j + outs, ... of the layer.
        samples = [oaa.o for oaa in oaas]
        crop = 0 if p.padding == "same" else p.k - 1
        map_h, map_w = c_cfg.height - crop, c_cfg.width - crop  # each map as overlap-add gives it
        out_w, out_h = Signal.like(c_cfg.width), Signal.like(c_cfg.height)  # each map as `o` gives it
        if p.post:
            posts = [PostStage(p.post_stage) for _ in paths]
            post_taken = Signal()  # this layer's `post` beat
            open_paths = [c_cfg.c_out > j for j in paths]  # a path with no channel of the layer takes no cfg
            m.d.comb += [
                self.post.ready.eq(c_busy & ~post_taken
                                   & Cat(*(st.cfg.ready | ~live for st, live in zip(posts, open_paths))).all()),
                self.post_busy.eq(Cat(*(st.busy for st in posts)).any()),
            ]
            with m.If(self.post.valid & self.post.ready):
                m.d.sync += [post_taken.eq(1),
                             out_h.eq(Mux(self.post.payload.pool, self.post.payload.height >> 1,
                                          self.post.payload.height)),
                             out_w.eq(Mux(self.post.payload.pool, self.post.payload.width >> 1,
                                          self.post.payload.width))]
            per_path = p.post_stage.max_channels
            for j, (st, live) in enumerate(zip(posts, open_paths)):
                m.submodules[f"post{'' if p.outs == 1 else j}"] = st
                channels = Array(Const(max(0, -(-(c - j) // p.outs)), range(per_path + 1))
                                 for c in range(p.max_c_out + 1))
                m.d.comb += [st.cfg.valid.eq(self.post.valid & self.post.ready & live),
                             st.cfg.payload.height.eq(map_h), st.cfg.payload.width.eq(map_w),
                             st.cfg.payload.channels.eq(channels[c_cfg.c_out]),
                             st.cfg.payload.window.eq(self.post.payload)]
                wiring.connect(m, oaas[j].o, st.i)
            samples = [st.o for st in posts]
        else:
            m.d.comb += [out_h.eq(map_h), out_w.eq(map_w)]

        # `o` gives the maps channel by channel. With several paths each holds its map in a buffer of a whole map
        # while the paths before it in the block give theirs: the paths run in step (the MAC feeds them tile by
        # tile), so a path that cannot finish its map would stall the others.
        if p.outs == 1:
            maps = samples
        else:
            maps = []
            for j, src in enumerate(samples):
                m.submodules[f"map{j}"] = fifo = SyncFIFOBuffered(width=p.spec.out_bits,
                                                                  depth=p.max_height * p.max_width)
                m.d.comb += [fifo.w_data.eq(src.payload), fifo.w_en.eq(src.valid), src.ready.eq(fifo.w_rdy)]
                maps.append(stream.Signature(signed(p.spec.out_bits)).create(path=("map", j)))
                m.d.comb += [maps[j].payload.eq(fifo.r_data), maps[j].valid.eq(fifo.r_rdy), fifo.r_en.eq(maps[j].ready)]

        # The layer ends with its last output value: count columns, rows and channels of the output maps.
        o_col, o_row = Signal.like(c_cfg.width), Signal.like(c_cfg.height)
        o_chan = Signal.like(c_cfg.c_out)
        o_path = Signal(range(p.outs))
        row_end = o_col == out_w - 1
        out_end = row_end & (o_row == out_h - 1)
        if p.outs == 1:
            wiring.connect(m, maps[0], wiring.flipped(self.o))
        else:
            m.d.comb += [self.o.valid.eq(Array(src.valid for src in maps)[o_path]),
                         self.o.payload.eq(Array(src.payload for src in maps)[o_path])]
            m.d.comb += [src.ready.eq(self.o.ready & (o_path == j)) for j, src in enumerate(maps)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += o_col.eq(o_col + 1)
            with m.If(row_end):
                m.d.sync += [o_col.eq(0), o_row.eq(o_row + 1)]
            with m.If(out_end):
                m.d.sync += [o_row.eq(0), o_chan.eq(o_chan + 1), o_path.eq(Mux(o_path == p.outs - 1, 0, o_path + 1))]
                with m.If(o_chan == c_cfg.c_out - 1):
                    m.d.sync += [o_chan.eq(0), o_path.eq(0)]
        # The layer's last value has left; the next layer waits for the post stages to have taken this one's
        # last samples too (those they drop).
        finished, last_value, end = Signal(), Signal(), Signal()
        m.d.comb += [last_value.eq(self.o.valid & self.o.ready & out_end & (o_chan == c_cfg.c_out - 1)),
                     end.eq((last_value | finished) & ~(self.post_busy if p.post else 0))]
        with m.If(last_value & ~end):
            m.d.sync += finished.eq(1)
        with m.If(end):
            m.d.sync += [finished.eq(0), q_sent.eq(0), q_path.eq(0), c_busy.eq(0)]
            if p.post:
                m.d.sync += post_taken.eq(0)
        return m


def cycle_model(params: SpectralConvParams, layer: SpectralLayer, h: int, w: int, *,
                pool: bool = False) -> dict[str, int]:
    """Full-rate cycles of one layer on an H x W input (`hw.spec.spectral.engine.layer_cycles` on this engine),
    its output pooled by the engine's post stages with `pool`."""
    return layer_cycles(params.describe(), layer, h, w, pool=pool)


__all__ = ["SpectralConvParams", "SpectralConv", "KernelReplay", "cycle_model"]
