"""Dense spatial convolution baseline: the engine SPEC2 is compared with on equal multipliers."""
