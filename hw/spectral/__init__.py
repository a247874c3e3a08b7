"""SPEC2 spectral sparse convolution hardware; the fixed-point spec it follows is `hw.spec.spectral`.

`tiler.py`: a channel's map into zero-padded N x N tiles; `fft.py`: streaming N-point FFT (`Fft1d`) and the
N x N tile transforms `Fft2d` / `Ifft2d` (half spectra travel column-major between them); `spectral_mac.py`:
the sparse spectral MAC; `ifft_input.py`: rounding, saturation and mirroring before the inverse;
`overlap_add.py`: overlap-add and requantization.
"""
