"""SPEC2 spectral sparse convolution hardware; the fixed-point spec it follows is `hw.spec.spectral`.

`tiler.py`: a channel's map into zero-padded N x N tiles; `fft.py`: the streaming N-point FFT (`SdfFft`, one
butterfly per stage) and the N x N tile transforms `Fft2d` / `Ifft2d` built of it (half spectra column-major);
`spectral_mac.py`:
the sparse spectral MAC; `ifft_input.py`: rounding, saturation and mirroring before the inverse;
`overlap_add.py`: overlap-add and requantization.
"""
