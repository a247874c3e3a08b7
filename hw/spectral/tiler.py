"""SPEC2 tiler: one input channel's feature map in raster order in, the `Fft2d`'s zero-padded tiles out.

Implements step 1 of `hw.spec.spectral` (`tile_input`, the `tiles` stage of `spectral_conv_fixed_stages`):
the map is cut into ceil(H / L) x ceil(W / L) tiles of L x L starting at x[0, 0], zero past the map's edge,
each zero-padded to N x N. The golden model does not pad the input for "same": both paddings tile the map
as it is and differ only in the crop after overlap-add (`OverlapAdd`), so this block has no padding or
kernel-size parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.params import check_ints, require_params, to_int
from ..spec.spectral.geometry import DEFAULT_N, check_fft_size


@dataclass(frozen=True)
class TilerParams:
    """Structural parameters of `Tiler`; validated on construction, hashable.

    n: FFT size (power of two, 4..256). l: tile size (1..n). act_bits: activation width (`SpectralFixed.act_bits`).
    max_height, max_width: the largest map; the actual H x W is a run-time `cfg` value.
    """

    n: int = DEFAULT_N
    l: int = 6  # noqa: E741 (the paper's name)
    act_bits: int = 8
    max_height: int = 28
    max_width: int = 28

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_fft_size(self.n))
        object.__setattr__(self, "l", to_int("l", self.l))
        if not 1 <= self.l <= self.n:
            raise ValueError(f"l must be in 1..n={self.n}, got {self.l}")
        check_ints(self, (("act_bits", 2, 16), ("max_height", 1, None), ("max_width", 1, None)))

    @property
    def col_bits(self) -> int:
        """Band buffer address = (bank, row, column) with the column in col_bits bits."""
        return max(1, (self.max_width - 1).bit_length())

    @property
    def band_size(self) -> int:
        """Words per band bank: l rows of 2^col_bits."""
        return self.l << self.col_bits

    @property
    def cfg_layout(self) -> data.StructLayout:
        """One beat per map, fields from the LSB."""
        return data.StructLayout({"height": self.max_height.bit_length(), "width": self.max_width.bit_length()})

    def tiles(self, h: int, w: int) -> tuple[int, int]:
        """Tile rows and columns of an H x W map."""
        return -(-h // self.l), -(-w // self.l)


class Tiler(wiring.Component):
    """One channel's map in, its tiles out, for the forward FFT.

    * `cfg` (`params.cfg_layout`): one beat per map, its height and width (1..max_height, 1..max_width).
    * `i` (signed act_bits): the map's H W values in raster order.
    * `o` (signed act_bits, = `Fft2d.i` with `FftParams.rows` = L): the tiles in tile raster order, each its
      first L rows of N row-major (the N - L rows below are zero and not sent) with each row's columns in
      bit-reversed order (`hw.spec.spectral.fixed.bit_reverse`, the order the row FFT takes): tile (r, c) value
      (a, b) is x[r L + a, c L + b] for a, b < L inside the map, 0 elsewhere (T_r T_c L N beats).

    A band is the L map rows one tile row covers. Bands go into a ping-pong buffer (`Memory`, 2 L 2^col_bits
    words): one fills while the tiles of the previous one are read out; each bank is tagged with its map's
    width and its number of valid rows (the last band may be short), so the writer goes on with the next
    map's `cfg` as soon as it has taken the previous map's last value.

    Throughput: `o` gives one beat per cycle. A band takes L W input beats but gives T_c L N >= L W output
    beats, so with `i` at full rate the output never stalls after a stream's first band: T_r T_c L N cycles per
    map (the input stalls for the difference), maps back to back too when the next map's first band (L W')
    loads within the previous map's last band (T_c L N beats), as it always does for equal sizes (a layer's
    channels). Latency: the first output comes 2 cycles after the first band's last input.
    """

    def __init__(self, params: TilerParams):
        require_params(self, params, TilerParams)
        self.params = params
        super().__init__({
            "cfg": In(stream.Signature(params.cfg_layout)),
            "i": In(stream.Signature(signed(params.act_bits))),
            "o": Out(stream.Signature(signed(params.act_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n, l, cb, size = p.n, p.l, p.col_bits, p.band_size  # noqa: E741
        m.submodules.bands = bands = Memory(shape=signed(p.act_bits), depth=2 * size, init=[])
        write, read = bands.write_port(), bands.read_port(transparent_for=())
        full = Signal(2)  # bank b holds a whole band not yet read
        tag_width = [Signal(range(p.max_width + 1), name=f"tag_width{b}") for b in range(2)]
        tag_rows = [Signal(range(l + 1), name=f"tag_rows{b}") for b in range(2)]

        # --- writer: value x[band_row + a, col] at (bank, a, col) -----------------------------------------
        cfg = Signal(p.cfg_layout)
        loaded = Signal()  # cfg taken, the map's last value not yet
        write_bank = Signal()
        a = Signal(range(l))
        col = Signal(range(p.max_width))
        band_row = Signal(range(p.max_height + l))
        take = Signal()
        m.d.comb += [
            self.cfg.ready.eq(~loaded),
            self.i.ready.eq(loaded & ~full.bit_select(write_bank, 1)),
            take.eq(self.i.valid & self.i.ready),
            write.en.eq(take), write.addr.eq(Value.cast(write_bank) * size + (a << cb) + col),
            write.data.eq(self.i.payload),
        ]
        with m.If(self.cfg.valid & self.cfg.ready):
            m.d.sync += [cfg.eq(self.cfg.payload), loaded.eq(1)]
        row_end = col == cfg.width - 1
        map_end = band_row + a == cfg.height - 1
        band_end = row_end & ((a == l - 1) | map_end)
        set_bit = Signal(2)
        m.d.comb += set_bit.eq(Value.cast(take & band_end) << write_bank)
        with m.If(take):
            m.d.sync += col.eq(col + 1)
            with m.If(row_end):
                m.d.sync += [col.eq(0), a.eq(a + 1)]
                with m.If(band_end):
                    m.d.sync += [a.eq(0), band_row.eq(band_row + l), write_bank.eq(~write_bank)]
                    for b in range(2):
                        with m.If(write_bank == b):
                            m.d.sync += [tag_width[b].eq(cfg.width), tag_rows[b].eq(a + 1)]
                    with m.If(map_end):
                        m.d.sync += [band_row.eq(0), loaded.eq(0)]

        # --- reader: tile column c_base, value (ta, tb); inside the band's data or 0 ----------------------
        read_bank = Signal()
        c_base = Signal(range(p.max_width + l))
        ta, tb = Signal(range(l)), Signal(range(n))
        width = Mux(read_bank, tag_width[1], tag_width[0])
        rows = Mux(read_bank, tag_rows[1], tag_rows[0])
        advance, issue = Signal(), Signal()
        # The tile's column at position tb of its row: bit-reversed, which the row FFT (`SdfFft`) takes. Wires only.
        tc = tb[::-1]
        inside = (ta < rows) & (tc < l) & (c_base + tc < width)
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            issue.eq(advance & full.bit_select(read_bank, 1)),
            read.en.eq(advance),
            read.addr.eq(Value.cast(read_bank) * size + (ta << cb) + c_base + tc),
        ]
        keep = Signal(reset_less=True)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(issue), keep.eq(inside)]
        tile_end = (ta == l - 1) & (tb == n - 1)
        last_tile = c_base + l >= width
        with m.If(issue):
            m.d.sync += tb.eq(tb + 1)
            with m.If(tb == n - 1):
                m.d.sync += [tb.eq(0), ta.eq(ta + 1)]
                with m.If(tile_end):
                    m.d.sync += [ta.eq(0), c_base.eq(c_base + l)]
                    with m.If(last_tile):
                        m.d.sync += [c_base.eq(0), read_bank.eq(~read_bank)]
        # Addresses outside the band (rows past `rows`, columns past the tile or the map) read whatever is
        # there: `keep` zeroes them.
        m.d.comb += self.o.payload.eq(Mux(keep, read.data, 0))

        # Set and cleared bits are different banks: the writer only fills an empty bank, the reader a full one.
        clear_bit = Signal(2)
        m.d.comb += clear_bit.eq(Value.cast(issue & tile_end & last_tile) << read_bank)
        m.d.sync += full.eq((full | set_bit) & ~clear_bit)
        return m


__all__ = ["Tiler", "TilerParams"]
