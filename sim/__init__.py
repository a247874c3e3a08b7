"""Verification: NumPy golden models, cocotb benches, the simulation runner and the virtual board."""
