"""Amaranth generators for sqgen's hardware: the host link, the compressed-weight blocks and the top."""
