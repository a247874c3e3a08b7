"""The bottom layer: what the hardware computes and how it talks, in NumPy and the standard library alone.

The compressed formats and their file codecs (`xor`, `bim`, `fc_format`, the spectral layer), the golden
models every RTL block is checked against (`fc`, `baseline`, `spectral`, `pool`, `link`), the beat layouts of every
stream (`xor_stream`, `bim_stream`, `fc_stream`, `spectral.stream`; the field-table codec `fields`), the host
link protocol (`protocol`) and parameter validation (`params`). It imports nothing else of the project and no
Amaranth, cocotb or torch, so the gateware, the host driver and the simulations all point down to it (the
contract in pyproject.toml).
"""
