"""Encoders producing sqgen's compressed weight formats from float weights (decoding lives in hw.spec)."""
