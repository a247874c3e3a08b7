"""What one layer descriptor costs in a RUN, by the engines' cycle models: the one rule `host.accel` sizes RUN's
wait with and `hw.sweep` characterises a config with.

The sequencer starts a layer's load while the conv layer before it computes (`hw.sequencer`'s prefetch): a conv
layer behind a conv layer costs `chained_cycles` from that one's end, an FC layer behind one
`fc_layer_cycles(loaded=True)`; any other layer costs its engine's cycles alone. The accelerator's conv engine runs
"same" and crops a "valid" layer (`valid_as_crop`). None of these counts the sequencer's own cycles per descriptor
(INFO's `descriptor.overhead_cycles`), which the callers add.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fc_stream import fc_layer_cycles
from .spectral.engine import chained_cycles, layer_cycles
from .spectral.layer import SpectralLayer

#: A conv layer as it runs: the layer, its input's height and width, whether its output is pooled.
ConvRun = tuple[SpectralLayer, int, int, bool]


def conv_run_cycles(engine: Mapping[str, Any], layer: ConvRun, before: ConvRun | None) -> int:
    """A conv descriptor's engine cycles in a RUN: behind the conv layer `before`, from its end; else alone."""
    if before is None:
        return int(layer_cycles(engine, *layer[:3], valid_as_crop=True, pool=layer[3])["single"])
    return chained_cycles(engine, before[:3], layer[:3], valid_as_crop=True, pools=(before[3], layer[3]))


def fc_run_cycles(engine: Mapping[str, Any], cols: int, rows: int, xor_beats: int, before: ConvRun | None) -> int:
    """An FC descriptor's engine cycles in a RUN: behind the conv layer `before` its input has loaded by that
    layer's end; else it loads first."""
    return fc_layer_cycles(engine, cols, rows, xor_beats, loaded=before is not None)


__all__ = ["ConvRun", "conv_run_cycles", "fc_run_cycles"]
