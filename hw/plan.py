"""An accelerator config derived from a compressed network and a board: `plan(model, board)`.

The network (`hw.spec.network.CompressedNetwork`) runs as one program of layer descriptors, by the step rule
(`hw.spec.network.program_steps`): one per conv layer, with the pool right after it as its post stage, and one per FC
layer; a flatten costs nothing (the buffers hold maps channel-major, as a flatten reads them). The derived config
has:

* the conv engine when there are conv layers: their geometry (N, K, L), ReLU and schedule (P lanes, B banks), which
  the compressor fixes for all of them (`compress_network(p=, b=)`), so they must agree; "same" padding ("valid"
  layers run as its crops); the largest C_in, C_out and input map of any conv layer; the default fixed point and
  kernel replay buffer (`SpectralConvParams`); `CONV_OUTS` output channels in flight where the board has room for
  the inverse paths, else half as many or one: among the candidates that fit, the fewest paths whose conv layers
  compute within `OUTS_SLACK` of the fastest (`hw.spec.spectral.engine.layer_cycles`): layers bound by the inverse
  FFT (LeNet-5's) take every path there is room for, layers bound by the MAC (a wide VGG-like layer's) gain
  nothing from more and keep one. A board without
  multipliers for P lanes is refused, naming them: P is the model's, recompress with a smaller `p` for a smaller
  board.
* the FC engine when there are FC layers: the model's `FcFormat` (`FcEngineParams.from_format`), max_rows x max_cols
  the largest layer (its cost grows with them only through counters and memory depth: at n_out 16 on the iCE40,
  120 x 400 -> 128 x 784 took 3 % more of the engine's LUT4s and the same EBR), x written lane by lane on the
  iCE40, where logic is scarce. One exception: when the widest layer's x memory (max_cols / n_t words of n_t bytes)
  is so shallow that yosys builds it of flip-flops, max_cols is also tried rounded up to where it becomes RAM cells
  (the 64-column digits MLP: 4 words of 128 bits in flip-flops are 900 of the UP5K's 5 280 LCs, 8 EBR instead),
  and the better of the two kept.
* regions sized from the model's own streams, packed as the host packs them (`hw.spec.spectral.stream`,
  `hw.spec.fc_stream.layer_streams`): each weight region holds the model's words plus `HEADROOM` (a retrained model
  of the same shape may need a few more kernel groups or XOR beats), rounded up to what the memory's block RAMs or
  LUT RAMs hold anyway; the activation buffers the largest map a descriptor reads or writes (the input, or an
  output after its pool), the program one descriptor per step, both rounded up the same way. When the config does
  not fit with the headroom it is tried without. (Rounding stops at the next power of two: an address bit more
  would cost logic in the region's reader and the descriptor.)
* on the iCE40, SPRAM for the regions that save most EBR per 16-bit SPRAM lane (weight regions and activation
  buffers; the program stays in its memory), as long as lanes are left (4 on the UP5K).
* with `trace`, room for a trace of every layer (`host run --trace`): the activation buffers also hold each pooled
  conv layer's unpooled output and the program one more descriptor per such layer (the layer with its pool off).

Every candidate is estimated (`hw.estimate`) and the one that fits with the least use of its scarcest resource
(logic, block RAM or DSPs) is kept, with the headroom if that fits. A resource within the estimate's tolerance of
the budget gets a note: the build may not fit.

When no candidate of the network as it is fits the board, its FC layers are cut into passes of output rows
(`hw.spec.fc_passes`, the rule the host packs by): candidates of an FC engine of fewer rows (each layer in
resident passes, a smaller engine), then with the largest layers streamed (their passes' words LOADed per image
into a slot the regions leave after the resident words), each with passes of fewer and fewer tile rows, in that
order: what they cost an image (cycles, then link bytes). The first sizing that fits is kept; the most split one
is tried first, and when even that does not fit, nothing else is tried. `Plan.passes` holds how each FC layer
runs on the config (what `host.accel` will pack) and `format()` names the passes. 784 -> 512 -> 10 at
`FC16_FORMAT` (fc1's XOR beats more than a region can address, or one SPRAM cell hold) plans on the iCEBreaker
with fc1 streamed in 4 passes of 128 rows. A network that fits no candidate is refused with one line naming the
limit and the board's budget (`PlanError`), e.g. "fc engine needs 5601 LC, icebreaker has 5280" (an MLP compressed
for the default format). `plan(model)` without a board takes the smallest board (by logic) the network fits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from boards import BOARDS, get_board
from hw.spec import fc_passes
from hw.spec.fc import ACT_BITS
from hw.spec.fc_stream import FcLayer, layer_streams
from hw.spec.network import CompressedNetwork, ModelFormatError, Step, load_model
from hw.spec.network import program_steps as network_program_steps
from hw.spec.spectral.engine import check_layer_fits, layer_cycles
from hw.spec.spectral.stream import kernel_beats, quant_beats

from .config import CONV_OUTS, MAX_DEPTH, AcceleratorConfig
from .estimate import Estimate, Memory, estimate, map_memory
from .fc_engine import FcEngineParams
from .layouts import layout_fields
from .memory import SPRAM_DEPTH, SpramParams
from .spectral.pipeline import SpectralConvParams

#: Room the weight regions get beyond the model's own words.
HEADROOM = 0.25
#: Conv compute within this fraction of the fastest candidate's counts as fast: fewer inverse paths are kept then.
OUTS_SLACK = 0.03
#: Regions that may go to SPRAM (the program is read by the sequencer itself, not streamed).
SPRAM_CANDIDATES = ("fc.xor", "fc.bim", "fc.scale", "conv.w", "conv.quant", "act0", "act1")


class PlanError(ValueError):
    """The network cannot run on the board (or on any): one line naming the limit."""


def program_steps(model: CompressedNetwork) -> list[Step]:
    """The network as descriptors by the step rule (`hw.spec.network.program_steps`), its refusals as PlanError."""
    try:
        return network_program_steps(model)
    except ValueError as error:
        raise PlanError(str(error)) from None


def _agree(steps: list[Step], what: str, value: Any) -> Any:
    """The one value `value(step)` the conv steps share; PlanError naming the layers when they differ."""
    values = {step.layer.name: value(step) for step in steps}
    if len(set(values.values())) > 1:
        listed = ", ".join(f"{name} {v}" for name, v in values.items())
        raise PlanError(f"the conv layers differ in {what} ({listed}); the conv engine fixes it for all of them")
    return next(iter(values.values()))


def conv_engine(steps: list[Step]) -> SpectralConvParams | None:
    """The conv engine of the conv steps (module docstring), None without them."""
    convs = [step for step in steps if step.kind == "conv"]
    if not convs:
        return None
    oaa = _agree(convs, "geometry (n, k, l)", lambda s: (s.layer.spectral.oaa.n, s.layer.spectral.oaa.k,
                                                          s.layer.spectral.oaa.l))
    relu = _agree(convs, "relu", lambda s: bool(s.layer.spectral.relu))
    p, b = _agree(convs, "schedule (p, b)", lambda s: (s.layer.spectral.schedule.p, s.layer.spectral.schedule.b))
    try:
        return SpectralConvParams(n=oaa[0], k=oaa[1], l=oaa[2], padding="same", relu=relu, p=p, b=b,
                               max_c_in=max(s.layer.spectral.c_in for s in convs),
                               max_c_out=max(s.layer.spectral.c_out for s in convs),
                               max_height=max(2, *(s.in_shape[1] for s in convs)),
                               max_width=max(2, *(s.in_shape[2] for s in convs)))
    except ValueError as error:
        raise PlanError(f"conv engine: {error}") from None


def fc_engine(model: CompressedNetwork, steps: list[Step], family: str, max_cols: int | None = None,
              max_rows: int | None = None) -> FcEngineParams | None:
    """The FC engine of the FC steps (module docstring), None without them; `max_cols` overrides the widest,
    `max_rows` (a bound on the passes' rows) the tallest."""
    fcs = [step.layer for step in steps if step.kind == "fc"]
    if not fcs:
        return None
    tallest = max(layer.shape[0] for layer in fcs)
    try:
        return FcEngineParams.from_format(model.fmt, max_rows=min(max_rows or tallest, tallest),
                                          max_cols=max_cols or max(layer.shape[1] for layer in fcs),
                                          x_lane_writes=family == "ice40")
    except ValueError as error:
        raise PlanError(f"fc engine: {error}") from None


@functools.lru_cache(maxsize=8)
def _engine_layers(steps: tuple[Step, ...]) -> dict[str, FcLayer]:
    """The FC steps' layers as the engine takes them, by name (made once: `hw.spec.fc_passes` caches by layer)."""
    return {step.layer.name: step.layer.engine_layer() for step in steps if step.kind == "fc"}


def program_words(steps: list[Step], conv: SpectralConvParams | None, fc: FcEngineParams | None,
                  streamed: int = 0) -> dict[str, int]:
    """Words the network's program takes in each region: descriptors, kernel groups, quant beats, XOR, BIM and
    scale beats, as the host packs them; FC layers cut into passes by the engine's max_rows and the `streamed`
    largest through one slot (`hw.spec.fc_passes.needed_words`). PlanError naming the layer when one does not run
    on these engines."""
    words = {"program": len(steps)}
    for step in steps:
        if step.kind != "conv":
            continue
        try:
            spectral = step.layer.spectral
            check_layer_fits(conv.describe(), spectral, step.in_shape, valid_as_crop=True)
            counts = {"conv.w": len(kernel_beats(layout_fields(conv.kernel_layout), spectral, conv.p)),
                      "conv.quant": len(quant_beats(layout_fields(conv.quant_layout), spectral))}
        except ValueError as error:
            raise PlanError(f"layer {step.layer.name}: {error}") from None
        for region, count in counts.items():
            words[region] = words.get(region, 0) + count
    layers = _engine_layers(tuple(steps))
    if layers:
        fmt = fc.stream_format
        for name, layer in layers.items():
            try:
                passes = fc_passes.split_rows(fmt, layer)
                # The first pass's beats, as the host packs them: their fields (cfg, scales) fit the engine.
                layer_streams(fmt, fc_passes.pass_layer(layer, 0, passes[0].stop),
                              np.zeros(layer.shape[1], dtype=np.int64))
            except ValueError as error:
                raise PlanError(f"layer {name}: {error}") from None
        words.update(fc_passes.needed_words(fmt, list(layers.values()), streamed, names=list(layers)))
    return words


def _holds(family: str, width: int, depth: int, spram: bool) -> int:
    """The depth a width x depth region holds at no extra cost: what its block or LUT RAMs (or SPRAM cells) hold
    anyway, within the address bits `depth` takes."""
    cells = SPRAM_DEPTH if spram else map_memory(family, Memory(("region",), width, depth, 1, 1, width)).holds
    return min(MAX_DEPTH, cells, 1 << (depth - 1).bit_length())


def _spram_regions(config: AcceleratorConfig) -> tuple[str, ...]:
    """The regions to put in SPRAM on an iCE40 with SPRAM (module docstring)."""
    board = get_board(config.board)
    lanes = board.budget.get("ICESTORM_SPRAM", 0)
    if board.family != "ice40" or not lanes:
        return ()
    saving = []
    for region in config.regions:
        if region.name in SPRAM_CANDIDATES and region.depth <= SPRAM_DEPTH:
            cells = map_memory("ice40", Memory(("region",), region.width, region.depth, 1, 1, region.width)).cells
            need = SpramParams(region.width, region.depth).lanes
            if cells:
                saving.append((cells / need, cells, region.name, need))
    chosen = []
    for _, _, name, need in sorted(saving, reverse=True):
        if need <= lanes:
            chosen.append(name)
            lanes -= need
    return tuple(chosen)


def _config(board: str, steps: list[Step], words: dict[str, int], conv: SpectralConvParams | None,
            fc: FcEngineParams | None, headroom: float, trace_act: int = 0, **overrides: Any) -> AcceleratorConfig:
    """The config of these engines and words on `board`, regions sized by the rules of the module docstring (the
    activation buffers at least `trace_act` words)."""
    family = get_board(board).family
    act = max(math.prod(shape) for step in steps for shape in (step.in_shape, step.out_shape))
    act = max(act, fc.max_cols if fc is not None else 0, trace_act)
    depths = {"program": words["program"], "act0": act, "act1": act,
              **{name: max(1, math.ceil(count * (1 + headroom))) for name, count in words.items()
                 if name != "program"}}
    for name, depth in depths.items():
        if depth > MAX_DEPTH:
            raise PlanError(f"region {name} needs {depth} words, a region holds at most {MAX_DEPTH}")
    fields = {"program": "program_depth", "act0": "act_depth", "conv.w": "conv_w_depth",
              "conv.quant": "conv_quant_depth", "fc.xor": "fc_xor_depth", "fc.bim": "fc_bim_depth",
              "fc.scale": "fc_scale_depth"}
    try:
        config = AcceleratorConfig(board=board, conv=conv, fc=fc, **{fields[n]: d for n, d in depths.items()
                                                                    if n in fields}, **overrides)
        spram = _spram_regions(config)
        widths = {region.name: region.width for region in config.regions}
        rounded = {name: _holds(family, widths[name], depth, name in spram) for name, depth in depths.items()}
        # One depth for both buffers: what the one outside SPRAM holds (SPRAM's whole cell if both are in it).
        rounded["act0"] = min(rounded["act0"], rounded.pop("act1"))
        return replace(config, spram_regions=spram, **{fields[n]: d for n, d in rounded.items()})
    except ValueError as error:
        raise PlanError(str(error)) from None


@dataclass(frozen=True)
class Plan:
    """A derived config, its estimate, and what the network's program takes of it."""

    config: AcceleratorConfig
    estimate: Estimate
    steps: tuple[Step, ...]
    words: dict[str, int]
    headroom: float
    notes: tuple[str, ...] = field(default=())
    #: How each FC layer runs on the config (`hw.spec.fc_passes.schedule`, as the host packs it), by name.
    passes: dict[str, fc_passes.FcSchedule] = field(default_factory=dict)

    def pass_lines(self) -> list[str]:
        """One line per FC layer run in more than one descriptor or streamed: its passes and what they cost."""
        lines = []
        for name, schedule in self.passes.items():
            if len(schedule.passes) == 1 and not schedule.streamed:
                continue
            rows = ", ".join(f"{p.start}..{p.stop - 1}" for p in schedule.passes)
            how = ("streamed: each pass's words LOADed per image into a slot after the resident ones"
                   if schedule.streamed else "resident")
            count = f"{len(schedule.passes)} passes of rows {rows}" if len(schedule.passes) > 1 else "one pass"
            lines.append(f"{name} in {count} ({how})")
        return lines

    @property
    def conv_outs(self) -> int:
        """Output channels the conv engine has in flight (0 without one)."""
        return self.config.conv.outs if self.config.conv is not None else 0

    @functools.cached_property
    def conv_compute(self) -> int:
        """Cycles the conv layers compute an image by the engine's cycle model (0 without conv layers)."""
        conv = self.config.conv
        if conv is None:
            return 0
        engine = conv.describe()
        return sum(layer_cycles(engine, step.layer.spectral, *step.in_shape[1:], valid_as_crop=True,
                                pool=step.pool)["compute"] for step in self.steps if step.kind == "conv")

    @property
    def utilisation(self) -> float:
        """The largest share of the board's budget logic, block RAM or DSPs take (SPRAM is filled as long as it
        saves block RAM, so it does not count)."""
        e = self.estimate
        return max(e.total(r) / e.budget(r) for r in ("logic", "bram", "dsp") if e.budget(r))

    def describe(self) -> dict[str, Any]:
        """JSON-able: the steps, the engines' parameters, each region's words used of its depth, the estimate."""
        c = self.config
        regions = {r.name: {"width": r.width, "depth": r.depth, "used": self.words.get(r.name, self.act_words),
                            "spram": r.name in c.spram_regions} for r in c.regions}
        return {"board": c.board, "steps": [{"name": s.name, "kind": s.kind, "pool": s.pool,
                                             "in": list(s.in_shape), "out": list(s.out_shape)} for s in self.steps],
                "conv": None if c.conv is None else c.conv.describe(),
                "fc": None if c.fc is None else {**c.fc.describe(), "x_lane_writes": c.fc.x_lane_writes},
                "regions": regions, "headroom": self.headroom, "notes": list(self.notes),
                "passes": {name: {"rows": [[p.start, p.stop] for p in schedule.passes], "streamed": schedule.streamed,
                                  "words": [dict(p.words) for p in schedule.passes]}
                           for name, schedule in self.passes.items()},
                "estimate": self.estimate.describe()}

    @property
    def act_words(self) -> int:
        return max(math.prod(shape) for step in self.steps for shape in (step.in_shape, step.out_shape))

    def format(self) -> str:
        """What `python -m hw.build --plan` prints: the program, the engines, the regions, the estimate."""
        c = self.config
        board = get_board(c.board)
        lines = [f"board: {board.name} ({board.device}, {c.clock_hz / 1e6:g} MHz)",
                 "program: " + ", ".join(f"{s.name} ({s.kind}{' + pool' if s.pool else ''} "
                                         f"{'x'.join(map(str, s.in_shape))} -> {'x'.join(map(str, s.out_shape))})"
                                         for s in self.steps)]
        if c.conv is not None:
            p = c.conv
            lines.append(f"conv engine: N={p.n} K={p.k} L={p.l} relu={p.relu} P={p.p} B={p.b}, up to {p.max_c_in} -> "
                         f"{p.max_c_out} channels on {p.max_height} x {p.max_width}, {p.outs} output channel"
                         f"{'s' if p.outs > 1 else ''} in flight")
        if c.fc is not None:
            f = c.fc
            lines.append(f"fc engine: n_in={f.n_in} n_out={f.n_out} max_patches={f.max_patches} m_t={f.m_t} r={f.r} "
                         f"a_bits={f.a_bits} max_bits={f.max_bits}, up to {f.max_rows} x {f.max_cols}"
                         f"{', x lane writes' if f.x_lane_writes else ''}")
        lines.append(f"regions (words used of depth; weight regions with {self.headroom:.0%} headroom):")
        for name, r in self.describe()["regions"].items():
            lines.append(f"  {name:<11}{r['width']:>4} bits {r['used']:>6} of {r['depth']:>6}"
                         f"{'  SPRAM' if r['spram'] else ''}")
        lines += [f"passes: {line}" for line in self.pass_lines()]
        lines += [f"note: {note}" for note in self.notes]
        lines.append("estimate:")
        lines.append(self.estimate.format())
        return "\n".join(lines)


def _schedules(config: AcceleratorConfig, steps: list[Step]) -> dict[str, fc_passes.FcSchedule]:
    """How the host will run each FC layer on `config` (`hw.spec.fc_passes.schedule` on its engine and regions)."""
    layers = _engine_layers(tuple(steps))
    if not layers:
        return {}
    depths = {region: config.region(region).depth for region in fc_passes.REGIONS}
    try:
        return dict(zip(layers, fc_passes.schedule(config.fc.stream_format, list(layers.values()), depths,
                                                   names=list(layers))))
    except ValueError as error:
        raise PlanError(str(error)) from None


def _candidates(model: CompressedNetwork, steps: list[Step], board: str, headroom: float,
                overrides: dict[str, Any], trace: bool = False, rows: int | None = None,
                streamed: int = 0) -> list[Plan]:
    """The configs of this board to estimate: with and without the headroom, the FC engine's x memory as sized and
    in RAM cells; FC layers cut into passes of at most `rows` rows, the `streamed` largest streamed."""
    family = get_board(board).family
    conv = conv_engine(steps)
    fc = fc_engine(model, steps, family, max_rows=rows)
    words = program_words(steps, conv, fc, streamed)
    trace_act = 0
    if trace:
        # A trace (host.infer) runs each pooled conv layer once more with its pool off, from a descriptor after the
        # program, and READs its unpooled output from one activation buffer.
        pooled = [step for step in steps if step.pool]
        words["program"] += len(pooled)
        trace_act = max((math.prod(model.shapes[model.names.index(step.layer.name)]) for step in pooled), default=0)
    sizings: list[tuple[FcEngineParams | None, tuple[str, ...]]] = [(fc, ())]
    if fc is not None:
        x = Memory(("fc", "x_mem"), fc.n_t * ACT_BITS, fc.x_depth, 1, 1, ACT_BITS if fc.x_lane_writes else
                   fc.n_t * ACT_BITS)
        ram = next((d for d in range(fc.x_depth + 1, 2 * fc.x_depth + 64)
                    if map_memory(family, replace(x, depth=d)).kind != "logic"), None)
        if map_memory(family, x).kind == "logic" and ram is not None:
            wide = fc_engine(model, steps, family, max_cols=ram * fc.n_t, max_rows=rows)
            sizings.append((wide, (f"fc max_cols {fc.max_cols} -> {wide.max_cols}: its x memory ({fc.x_depth} "
                                   f"words of {fc.n_t * ACT_BITS} bits) in RAM cells rather than flip-flops",)))
    # The conv engine with CONV_OUTS output channels in flight, half as many, and one, for boards without room for
    # more (`plan` prefers the most that fit).
    convs = [conv] if conv is None else list(dict.fromkeys(
        replace(conv, outs=min(outs, conv.max_c_out)) for outs in (CONV_OUTS, max(1, CONV_OUTS // 2), 1)))
    plans = []
    for room in dict.fromkeys((headroom, 0.0)):
        for conv_engine_params in convs:
            for engine, notes in sizings:
                config = _config(board, steps, words, conv_engine_params, engine, room, trace_act, **overrides)
                plans.append(Plan(config, estimate(config), tuple(steps), words, room, notes,
                                  _schedules(config, steps)))
        if any(p.estimate.fits for p in plans):
            break  # the headroom fits: no need to try without
    return plans


def load_network(path: str | Path) -> CompressedNetwork:
    """A compressed network file (`hw.spec.network`, any `FcFormat`); PlanError, one line naming the file and the
    field, when it is not one."""
    try:
        return load_model(path, expected=None)
    except ModelFormatError as error:
        hint = ("; the compressed LeNet-5 file becomes one with host.lenet5.compressed.to_network and "
                "hw.spec.network.save_model" if "sqgen-lenet5-full" in str(error) else "")
        raise PlanError(f"{error}{hint}") from None


def plan(model: CompressedNetwork, board: str | None = None, *, headroom: float = HEADROOM, trace: bool = False,
         **overrides: Any) -> Plan:
    """The config `model` runs on, on `board` (None: the smallest board it fits), with its estimate; `overrides`
    are other `AcceleratorConfig` fields (baud, max_payload, ...). PlanError, one line, when it fits nowhere.
    `trace`: room for a trace of every layer (`host.infer`): buffers for unpooled conv outputs, their descriptors."""
    if not isinstance(model, CompressedNetwork):
        raise PlanError(f"model must be a CompressedNetwork, got {type(model).__name__}")
    if not 0 <= headroom <= 4:
        raise PlanError(f"headroom must be in 0..4, got {headroom}")
    steps = program_steps(model)
    boards = [board] if board is not None else sorted(BOARDS, key=lambda name: _logic_budget(name))
    refusals = []
    for name in boards:
        get_board(name)  # an unknown board raises, naming the known ones
        tried: list[Plan] = []
        error = None
        probe: list[Plan] = []  # the most split sizing's fitting plans: kept when no cheaper sizing fits
        for index, (rows, streamed) in enumerate([(None, 0), *_pass_sizings(model, steps)]):
            try:
                plans = _candidates(model, steps, name, headroom, overrides, trace, rows, streamed)
            except PlanError as refused:
                error, plans = refused, []
            fitting = [p for p in plans if p.estimate.fits]
            tried += plans
            if index == 1:
                if not fitting:  # the smallest passes, all streamed, do not fit: no other sizing will
                    break
                probe = fitting
            elif fitting:
                return _best(fitting, headroom)
        if probe:
            return _best(probe, headroom)
        if not tried:
            refusals.append((name, str(error)))
            continue
        least = min(tried, key=lambda p: p.utilisation)
        refusals.append((name, "; ".join(_hinted(line, least.config) for line in least.estimate.over())))
    if board is not None or len({why for _, why in refusals}) == 1:
        raise PlanError(refusals[0][1])
    raise PlanError("fits no board: " + "; ".join(f"{name}: {why}" for name, why in refusals))


def _best(fitting: list[Plan], headroom: float) -> Plan:
    """The plan to keep among those that fit: with the headroom; the fewest conv outputs in flight that compute
    within `OUTS_SLACK` of the fastest; the least used."""
    kept = [p for p in fitting if p.headroom == headroom] or fitting
    fastest = min(p.conv_compute for p in kept)
    return min((p for p in kept if p.conv_compute <= fastest * (1 + OUTS_SLACK)),
               key=lambda p: (p.conv_outs, p.utilisation))


def _pass_sizings(model: CompressedNetwork, steps: list[Step]) -> list[tuple[int, int]]:
    """(max rows of a pass, layers streamed) to try after the network as it is, in the order of what they cost an
    image: resident passes (a smaller engine; each pass reads the input again), then the largest layers streamed
    (their words LOADed per image), each with passes of fewer and fewer whole tile rows. The smallest engine with
    everything streamed is tried first as a probe (`plan`): when even that does not fit, nothing will, and its
    refusal names the limit."""
    layers = _engine_layers(tuple(steps))
    if not layers:
        return []
    m_t = model.fmt.m_t
    tile_rows = max(-(-layer.shape[0] // m_t) for layer in layers.values())
    rows = sorted({-(-tile_rows // k) * m_t for k in range(1, tile_rows + 1)}, reverse=True)
    order = [(r, s) for s in range(len(layers) + 1) for r in rows if (r, s) != (rows[0], 0)]
    return [order[-1], *order[:-1]] if order else []


def _hinted(line: str, config: AcceleratorConfig) -> str:
    """An estimate's refusal line, with what to change in the model when the conv engine's multipliers are over:
    its lanes are the model's schedule."""
    units = ("DSP", "MULT18X18D")
    if config.conv is not None and line.startswith("conv engine needs") and line.split(",")[0].endswith(units):
        return (f"{line} (P = {config.conv.p} lanes of 4 real products: compress the model with a smaller p for "
                f"fewer)")
    return line


def _logic_budget(board: str) -> int:
    budget = get_board(board).budget
    return budget.get("ICESTORM_LC", budget.get("TRELLIS_COMB", 0))


__all__ = ["HEADROOM", "PlanError", "Step", "program_steps", "conv_engine", "fc_engine", "program_words", "Plan",
           "load_network", "plan"]
