"""SPEC2 spectral sparse convolution hardware; the fixed-point spec it follows is `sim/golden/spec2.py`.

`fft.py`: streaming N-point FFT (`Fft1d`) and the N x N tile transforms `Fft2d` / `Ifft2d` (half spectra travel
column-major between them); `spectral_mac.py`: the sparse spectral MAC; `overlap_add.py`: overlap-add and
requantization.
"""
