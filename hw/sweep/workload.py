"""What a sweep point is characterised with: a compressed network's cycles per image on the point's engines, by
the engines' cycle models.

Each layer descriptor of the network's program (`hw.spec.network.program_steps`) costs what `hw.spec.run` says,
the rule `host.accel` plans RUN's wait with: a conv layer `hw.spec.spectral.engine.layer_cycles` (run as the
engine's "same" geometry, cropped), an FC layer `hw.spec.fc_stream.fc_layer_cycles` on its own XOR beat count, each
plus the sequencer's own cycles per descriptor (INFO's `descriptor.overhead_cycles`); layers run one after the
other, but a conv layer behind a conv layer loads while the one before computes
(`hw.spec.spectral.engine.chained_cycles`), and an FC layer behind one has loaded by its end
(`fc_layer_cycles(loaded=True)`). These are the
figures `host.accel` plans and RUN waits for, which the accelerator's tests check against the RTL. A config
without an engine for the network's first layers (the FC-only config and LeNet-5's conv layers) is
characterised on the layers it runs, and the result says which were left out.

A workload is a compressed network file: `sqgen-net` (`hw.spec.network`) or the committed LeNet-5's
`sqgen-lenet5-full` (`models/lenet5_full.npz`, `models/lenet5_fc16.npz`; docs/formats.md), read here as the same
network the host runs: conv1, pool1, conv2, pool2, flatten, fc1, fc2, fc3 on a 1 x 28 x 28 image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hw.spec.network import (
    CompressedNetwork,
    ConvLayer,
    FlattenLayer,
    ModelFormatError,
    PoolLayer,
    check_header,
    conv_layer_from_fields,
    fc_format_from_fields,
    fc_layer_from_fields,
    model_from_fields,
    read_model,
    scalar_field,
)
from hw.spec.run import ConvRun, conv_run_cycles, fc_run_cycles

from ..config import AcceleratorConfig
from ..plan import PlanError, Step, program_steps, program_words

#: The project's models directory, where the default workloads are.
MODELS = Path(__file__).resolve().parents[2] / "models"
#: The workload each named config is characterised with by default (None: no engine, nothing to run).
DEFAULT_WORKLOADS: dict[str, Path | None] = {"lenet5": MODELS / "lenet5_full.npz",
                                              "fc_only": MODELS / "lenet5_fc16.npz", "link": None}
#: The committed LeNet-5's file format and its fixed structure (docs/formats.md, "Compressed LeNet-5").
LENET5_FORMAT, LENET5_VERSION = "sqgen-lenet5-full", 1
LENET5_IMAGE = (1, 28, 28)
#: Config fields that size each region (a workload must fit them).
REGION_FIELDS = {"program": "program_depth", "act0": "act_depth", "act1": "act_depth", "conv.w": "conv_w_depth",
                 "conv.quant": "conv_quant_depth", "fc.xor": "fc_xor_depth", "fc.bim": "fc_bim_depth",
                 "fc.scale": "fc_scale_depth"}


def _lenet5(raw: Mapping[str, np.ndarray]) -> CompressedNetwork:
    metadata = check_header(raw, LENET5_FORMAT, LENET5_VERSION)
    fmt = fc_format_from_fields(raw, None)
    conv1, conv2 = (ConvLayer(name, conv_layer_from_fields(raw, name)) for name in ("conv1", "conv2"))
    fcs = tuple(fc_layer_from_fields(raw, name, fmt) for name in ("fc1", "fc2", "fc3"))
    return CompressedNetwork(input_shape=LENET5_IMAGE, input_scale=scalar_field(raw, "input_scale", "float"),
                             layers=(conv1, PoolLayer("pool1"), conv2, PoolLayer("pool2"), FlattenLayer("flatten"),
                                     *fcs), fmt=fmt, metadata={**metadata, "name": "lenet5"})


def _decode(raw: Mapping[str, np.ndarray]) -> CompressedNetwork:
    if "format" in raw and raw["format"].shape == () and str(raw["format"]) == LENET5_FORMAT:
        return _lenet5(raw)
    return model_from_fields(raw, expected=None)


def load_workload(path: str | Path) -> CompressedNetwork:
    """The network of a workload file (`sqgen-net` or `sqgen-lenet5-full`); PlanError, one line naming the file and
    the field, when it is neither."""
    try:
        return read_model(path, _decode)
    except (ModelFormatError, OSError) as error:
        raise PlanError(str(error)) from None


@dataclass(frozen=True)
class Workload:
    """A network and the file it came from, as a sweep characterises points with it."""

    path: Path
    network: CompressedNetwork
    #: Each layer's region words by (layer, the engine parameters they depend on): points that differ elsewhere
    #: (the seed, an adder tree's fan-in) share them.
    words: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> Workload:
        return cls(Path(path), load_workload(path))

    def cycles(self, config: AcceleratorConfig) -> dict[str, Any]:
        """The network's cycles per image on `config`'s engines (`workload_cycles`), with the file's name."""
        return {"model": self.path.name, **workload_cycles(config, self.network, self.words)}


def workload_cycles(config: AcceleratorConfig, network: CompressedNetwork, cache: dict | None = None
                    ) -> dict[str, Any]:
    """Cycles per image of `network` on `config` by the engines' cycle models: `layers` (descriptor name ->
    cycles), `cycles_per_image` (their sum), `left_out` (the leading layers the config has no engine for) and
    `what` (a sentence saying so). PlanError, one line naming the config field, when a layer it runs does not fit:
    another FC format or conv geometry/schedule, a region or activation buffer too small. `cache` keeps each
    layer's region words between calls."""
    steps = program_steps(network)
    runs = [getattr(config, step.kind) is not None for step in steps]
    if not any(runs):
        raise PlanError(f"the workload's layers ({', '.join(s.kind for s in steps)}) have no engine on this config")
    first = runs.index(True)
    if not all(runs[first:]):
        missing = next(s for s, r in zip(steps[first:], runs[first:]) if not r)
        raise PlanError(f"layer {missing.name}: this config has no {missing.kind} engine, and the layers before it do "
                        "run here (only leading layers may be left out)")
    kept, left_out = steps[first:], [step.name for step in steps[:first]]
    words = _check_fits(config, kept, network, {} if cache is None else cache)
    # The sequencer's own cycles per descriptor, as INFO tells the host (none from a config that names none).
    overhead = int(config.describe()["descriptor"].get("overhead_cycles", 0))
    layers, before = {}, None
    for step in kept:
        layers[step.name] = _step_cycles(config, step, words[step.name], before) + overhead
        before = step if step.kind == "conv" else None
    kinds = sorted({step.kind for step in kept})
    what = (f"cycles per image of the {network.metadata.get('name', 'network')}'s "
            f"{' and '.join(kinds)} layers by the engines' cycle models (hw.spec.spectral.engine.layer_cycles, "
            "hw.spec.fc_stream.fc_layer_cycles) plus the sequencer's overhead per descriptor (INFO's "
            "descriptor.overhead_cycles): what host.accel's RUN waits for, layers one after the other but a conv "
            "layer behind a conv layer, which loads while it computes (chained_cycles, fc_layer_cycles(loaded=True))")
    if left_out:
        what += f"; left out: {', '.join(left_out)} (no engine for them on this config)"
    return {"layers": layers, "cycles_per_image": sum(layers.values()), "left_out": left_out, "what": what}


def _check_fits(config: AcceleratorConfig, steps: list[Step], network: CompressedNetwork, cache: dict
                ) -> dict[str, dict[str, int]]:
    """Each step's region words; PlanError unless every step runs on the config's engines and fits its regions."""
    if config.fc is not None and any(step.kind == "fc" for step in steps):
        diff = config.fc.fc_format.differences(network.fmt)
        if diff:
            raise PlanError(f"the workload is compressed for another FC format (engine != workload: "
                            f"{'; '.join(diff)}); give --workload a model compressed for the swept format, or "
                            "--workload none")
    per_step = {}
    for step in steps:
        # A conv layer's words depend on the whole conv engine, an FC layer's on the FC engine's beat formats only.
        key = (step.name, config.conv if step.kind == "conv" else config.fc.stream_format)
        if key not in cache:
            try:
                cache[key] = program_words([step], config.conv, config.fc)
            except PlanError as error:
                raise PlanError(f"{error}; the workload runs on the conv engine's own (n, k, l) and schedule (p, b), "
                                "recompress it for the swept values, or --workload none") from None
        per_step[step.name] = cache[key]
    need: dict[str, int] = {}
    for words in per_step.values():
        for region, count in words.items():
            need[region] = need.get(region, 0) + count
    need["act0"] = max(math.prod(shape) for step in steps for shape in (step.in_shape, step.out_shape))
    depths = {region.name: region.depth for region in config.regions}
    for region, count in need.items():
        if count > depths[region]:
            raise PlanError(f"{REGION_FIELDS[region]} must be at least {count} for the workload's {region} words, "
                            f"got {depths[region]}")
    return per_step


def _conv_run(step: Step) -> ConvRun:
    return step.layer.spectral, step.in_shape[1], step.in_shape[2], step.pool


def _step_cycles(config: AcceleratorConfig, step: Step, words: dict[str, int], before: Step | None) -> int:
    """A step's cycles in the RUN (`hw.spec.run`), behind the conv step `before` (None: any other or none)."""
    behind = None if before is None else _conv_run(before)
    if step.kind == "conv":
        return conv_run_cycles(config.conv.describe(), _conv_run(step), behind)
    rows, cols = step.layer.shape
    return int(fc_run_cycles(config.fc.describe(), cols, rows, words["fc.xor"], behind))


__all__ = ["DEFAULT_WORKLOADS", "Workload", "load_workload", "workload_cycles"]
