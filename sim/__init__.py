"""Verification: NumPy golden models, cocotb testbenches, the simulation runner and the virtual board."""
