"""Every benchmark of sqgen, one CLI: `python -m sim.bench NAME`, JSON on stdout, progress on stderr.

* `xor`: the XOR-gate weight format (bits per weight, encoder time, decoder weights/s);
* `bim`: binary-index-matrix masks (index bits per weight, kept magnitude, LeNet-5 accuracy, unpacker rate);
* `spectral` (or `spec2`): SPEC2 against the dense baseline on equal DSPs;
* `admm`: LeNet-5's spectral pruning, ADMM against magnitude (needs torch);
* `e2e`: the compressed LeNet-5 end to end (size, accuracy, cycles, images/s);
* `link`, `board`: the simulated board's speed (echo throughput; images through a whole accelerator);
* `readme`: README.md's measured figures, rendered from the JSON the others wrote into docs/figures/.

They sit on top of the floor plan (docs/architecture.md): they build gateware, run simulations and drive the
host, so only here may all three meet.
"""
