"""The post stage of a conv layer on a stream of feature maps: `Crop` (a window of each map) and `MaxPool2`
(2 x 2 max-pooling, stride 2), what LeNet-5 needs between its conv layers; `PostStage` is the one then the other
(or the crop alone), with one cfg beat per layer. The conv engine has one behind each of its inverse paths.

`MaxPool2` takes one `cfg` beat per layer (height, width, channels) and then the layer's maps channel by
channel, each in raster order, one signed sample per beat (the order `SpectralConv` writes them). It emits
each channel's (height // 2) x (width // 2) maxima in raster order. An odd last row or column is read and
dropped, as torch's `max_pool2d` does. The golden model is `hw.spec.pool.max_pool`.

One line buffer of width // 2 entries holds the maxima of the pairs of an even row; the odd row finishes
them. A sample is taken whenever the output register is free or being emptied, so the block runs at one
sample per cycle and holds its output under backpressure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .spec.params import check_ints, require_params

#: Largest map side, channel count or sample width the post stage accepts.
MAX_SIZE = 1 << 16


@dataclass(frozen=True)
class _MapStageParams:
    """Largest map a post stage takes (max_height x max_width, max_channels) and the sample width."""

    max_height: int = 28
    max_width: int = 28
    max_channels: int = 64
    bits: int = 8
    #: Smallest map side and sample width the stage accepts.
    MIN_SIDE: ClassVar[int] = 1

    def __post_init__(self) -> None:
        low = self.MIN_SIDE
        check_ints(self, [("max_height", low, MAX_SIZE), ("max_width", low, MAX_SIZE), ("max_channels", 1, MAX_SIZE),
                          ("bits", low, MAX_SIZE)])

    def map_fields(self) -> dict[str, int]:
        """The cfg beat's map fields (height, width, channels) and their widths."""
        return {"height": self.max_height.bit_length(), "width": self.max_width.bit_length(),
                "channels": self.max_channels.bit_length()}

    def describe(self) -> dict[str, Any]:
        return {"max_height": self.max_height, "max_width": self.max_width, "max_channels": self.max_channels,
                "bits": self.bits}


def _stage_ports(params: _MapStageParams, busy: bool) -> dict[str, Any]:
    """A map stage's ports: `cfg` (one beat per layer), samples `i` in and `o` out, and with `busy` that flag."""
    return {"cfg": In(stream.Signature(params.cfg_layout)), "i": In(stream.Signature(signed(params.bits))),
            "o": Out(stream.Signature(signed(params.bits))), **({"busy": Out(1)} if busy else {})}


@dataclass(frozen=True)
class MaxPoolParams(_MapStageParams):
    """Largest map the block pools (max_height x max_width, max_channels) and the sample width."""

    MIN_SIDE: ClassVar[int] = 2  # a 2 x 2 window

    @property
    def cfg_layout(self) -> data.StructLayout:
        """One beat per layer, fields from the LSB."""
        return data.StructLayout(self.map_fields())


class MaxPool2(wiring.Component):
    """`cfg` (one beat per layer), `i` (samples) in; `o` (pooled samples) out."""

    def __init__(self, params: MaxPoolParams):
        require_params(self, params, MaxPoolParams)
        self.params = params
        super().__init__(_stage_ports(params, busy=False))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        cfg = Signal(p.cfg_layout)
        row = Signal(range(p.max_height))
        col = Signal(range(p.max_width))
        channel = Signal(range(p.max_channels))
        left = Signal(signed(p.bits))  # the even column's sample of the current pair

        m.submodules.line = line = Memory(shape=signed(p.bits), depth=max(1, p.max_width // 2), init=[])
        read = line.read_port(domain="comb")
        write = line.write_port()
        pair = col >> 1
        m.d.comb += read.addr.eq(pair)

        sample = self.i.payload
        pair_max = Mux(sample > left, sample, left)
        pooled = Mux(read.data > pair_max, read.data, pair_max)
        # A sample closes a window when it is the odd column of an odd row, inside the even-sized part.
        in_rows = (row | 1) < cfg.height
        in_cols = (col | 1) < cfg.width
        closes = row[0] & col[0] & in_rows & in_cols
        m.d.comb += [write.addr.eq(pair), write.data.eq(pair_max)]

        last_col = col == cfg.width - 1
        last_row = row == cfg.height - 1
        last_channel = channel == cfg.channels - 1
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("CFG"):
                m.d.comb += self.cfg.ready.eq(1)
                with m.If(self.cfg.valid):
                    m.d.sync += [cfg.eq(self.cfg.payload), row.eq(0), col.eq(0), channel.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
                with m.If(self.i.valid & self.i.ready):
                    with m.If(~col[0]):
                        m.d.sync += left.eq(sample)
                    with m.Elif(~row[0] & in_cols):
                        m.d.comb += write.en.eq(1)
                    with m.If(closes):
                        m.d.sync += [self.o.payload.eq(pooled), self.o.valid.eq(1)]
                    m.d.sync += col.eq(col + 1)
                    with m.If(last_col):
                        m.d.sync += [col.eq(0), row.eq(row + 1)]
                        with m.If(last_row):
                            m.d.sync += [row.eq(0), channel.eq(channel + 1)]
                            with m.If(last_channel):
                                m.next = "CFG"
        return m


@dataclass(frozen=True)
class CropParams(_MapStageParams):
    """Largest map the block crops (max_height x max_width, max_channels) and the sample width."""

    @property
    def cfg_layout(self) -> data.StructLayout:
        """One beat per layer, fields from the LSB: the map's size, then the window's corner and size."""
        h, w = self.max_height.bit_length(), self.max_width.bit_length()
        return data.StructLayout({**self.map_fields(), "top": h, "left": w, "out_height": h, "out_width": w})


class Crop(wiring.Component):
    """`cfg` (one beat per layer), `i` (samples) in; `o` (the window's samples) out.

    The maps arrive channel by channel, each height x width in raster order; each channel's samples at rows
    top..top+out_height-1 and columns left..left+out_width-1 leave in raster order, the others are consumed
    and dropped (NumPy: `x[:, top:top + out_height, left:left + out_width]`). A window reaching past the map
    is cut at its edge. One sample per cycle; the output register holds under backpressure. `busy` is high
    from the cfg beat until the layer's last sample has been taken and the output register is empty, so a
    sequencer knows when every sample of a layer has left.
    """

    def __init__(self, params: CropParams):
        require_params(self, params, CropParams)
        self.params = params
        super().__init__(_stage_ports(params, busy=True))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        cfg = Signal(p.cfg_layout)
        row = Signal(range(p.max_height))
        col = Signal(range(p.max_width))
        channel = Signal(range(p.max_channels))
        # The window's far edges are added once per layer, so the per-sample keep test is comparisons only.
        bottom = Signal(p.max_height.bit_length() + 1)
        right = Signal(p.max_width.bit_length() + 1)
        running = Signal()

        last_col = col == cfg.width - 1
        last_row = row == cfg.height - 1
        last_channel = channel == cfg.channels - 1
        keep = (row >= cfg.top) & (row < bottom) & (col >= cfg.left) & (col < right)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.comb += [self.cfg.ready.eq(~running), self.busy.eq(running | self.o.valid),
                     self.i.ready.eq(running & (~self.o.valid | self.o.ready))]
        with m.If(self.cfg.valid & self.cfg.ready):
            new = self.cfg.payload
            m.d.sync += [cfg.eq(new), row.eq(0), col.eq(0), channel.eq(0), running.eq(1),
                         bottom.eq(new.top + new.out_height), right.eq(new.left + new.out_width)]
        with m.If(self.i.valid & self.i.ready):
            with m.If(keep):
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
            m.d.sync += col.eq(col + 1)
            with m.If(last_col):
                m.d.sync += [col.eq(0), row.eq(row + 1)]
                with m.If(last_row):
                    m.d.sync += [row.eq(0), channel.eq(channel + 1)]
                    with m.If(last_channel):
                        m.d.sync += running.eq(0)
        return m


@dataclass(frozen=True)
class PostParams(_MapStageParams):
    """Largest map the post stage (a crop, then a 2 x 2 max-pool or none) takes, its channels and sample width."""

    MIN_SIDE: ClassVar[int] = 2  # the pool's window

    @property
    def crop(self) -> CropParams:
        return CropParams(self.max_height, self.max_width, self.max_channels, self.bits)

    @property
    def pool(self) -> MaxPoolParams:
        return MaxPoolParams(self.max_height, self.max_width, self.max_channels, self.bits)

    @property
    def window_layout(self) -> data.StructLayout:
        """A layer's post settings, fields from the LSB: the crop window (top, left, height, width), the pool flag."""
        h, w = self.max_height.bit_length(), self.max_width.bit_length()
        return data.StructLayout({"top": h, "left": w, "height": h, "width": w, "pool": 1})

    @property
    def cfg_layout(self) -> data.StructLayout:
        """One beat per layer: the map (height, width, channels) and its `window_layout`."""
        return data.StructLayout({**self.map_fields(), "window": self.window_layout})


class PostStage(wiring.Component):
    """`Crop`, then `MaxPool2` when the layer's cfg beat says `pool` (else past it): a conv layer's post stage.

    `cfg` is taken when both blocks are idle; `busy` is high from it until the crop has let the layer's last
    sample go and the pool's output register is empty, so whoever counts the outputs knows when the stage has
    also consumed the samples it drops (the rows and columns outside the window, a pool's odd last row).
    """

    def __init__(self, params: PostParams):
        require_params(self, params, PostParams)
        self.params = params
        super().__init__(_stage_ports(params, busy=True))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.crop = crop = Crop(p.crop)
        m.submodules.pool = pool = MaxPool2(p.pool)
        pooling = Signal()
        new = self.cfg.payload
        window = new.window
        m.d.comb += [
            self.cfg.ready.eq(crop.cfg.ready & (pool.cfg.ready | ~window.pool)),
            crop.cfg.valid.eq(self.cfg.valid & self.cfg.ready),
            crop.cfg.payload.height.eq(new.height), crop.cfg.payload.width.eq(new.width),
            crop.cfg.payload.channels.eq(new.channels), crop.cfg.payload.top.eq(window.top),
            crop.cfg.payload.left.eq(window.left), crop.cfg.payload.out_height.eq(window.height),
            crop.cfg.payload.out_width.eq(window.width),
            pool.cfg.valid.eq(self.cfg.valid & self.cfg.ready & window.pool),
            pool.cfg.payload.height.eq(window.height), pool.cfg.payload.width.eq(window.width),
            pool.cfg.payload.channels.eq(new.channels),
            self.busy.eq(crop.busy | pool.o.valid),
        ]
        with m.If(self.cfg.valid & self.cfg.ready):
            m.d.sync += pooling.eq(window.pool)
        wiring.connect(m, wiring.flipped(self.i), crop.i)
        with m.If(pooling):
            wiring.connect(m, crop.o, pool.i)
            wiring.connect(m, pool.o, wiring.flipped(self.o))
        with m.Else():
            wiring.connect(m, crop.o, wiring.flipped(self.o))
        return m
