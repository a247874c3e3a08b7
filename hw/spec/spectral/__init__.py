"""Golden model of SPEC2 sparse spectral convolution (Niu et al., HiPC 2019): the one home of its math.

The operator. A layer maps x (C_in, H, W) to y (C_out, H_out, W_out) by overlap-and-add (OaA) with tile
size L, FFT size N (a power of two, N >= L + K - 1) and the spatial kernel size K it was made for:

1. Tiles: x is cut into T_r x T_c = ceil(H / L) x ceil(W / L) tiles of L x L starting at x[0, 0]; tile (r, c)
   holds x[:, r L + a, c L + b] for a, b < L (zero past the map's edge) and is zero-padded to N x N.
2. Spectra: each tile's 2-D DFT, kept as the rfft2 half N x (N/2 + 1) (rows k1 = 0..N-1, columns
   k2 = 0..N/2); bin (k1, k2) has linear index k1 (N/2 + 1) + k2.
3. Per output channel o: Y[o] = sum over i of X[i] * W[o, i], bin by bin, W the layer's spectral weights.
4. Each Y[o] back through the inverse 2-D DFT (irfft2, N x N real), added into a canvas of
   (T_r L + N - L) x (T_c L + N - L) at (r L, c L): neighbouring tiles overlap by N - L.
5. y = canvas[o, s + r, s + c] + bias[o] for r < H_out, c < W_out; "same": s = K - 1 - (K - 1) // 2 and
   H_out = H; "valid": s = K - 1 and H_out = H - K + 1. Then ReLU if the layer has it.

With W[o, i] = rfft2 of w[o, i] flipped in both axes and zero-padded to N x N (`kernel_spectrum`) this is
exactly torch.nn.Conv2d's cross-correlation y[o, r, c] = sum_{i,u,v} w[o, i, u, v] x[i, r + u - p, c + v - p]
(p = (K - 1) // 2 for "same", the extra pad of an even K at the bottom/right as torch does; p = 0 for
"valid"). Once W is pruned or trained freely it is no longer a K x K kernel: the layer *is* steps 1-5
(`spectral_conv_float`), and golden, hardware and training all compute that.

Sparse spectral weights. A real kernel's spectrum is Hermitian, W[k1, k2] = conj W[-k1, -k2] (mod N), so
the half holds it all, with one redundancy: columns 0 and N/2 pair with themselves (k1 <-> N - k1). Only
*canonical* bins are stored: columns 1..N/2-1 whole, and rows 0..N/2 of columns 0 and N/2 (34 bins at
N = 8); the other bins of those two columns are the conjugates of their partners. The four self-conjugate
bins (0 or N/2, 0 or N/2) must be real. A kernel is a list of (canonical index, complex value), indices
ascending; the stored values are int16 re/im times one float `weight_scale` per layer.

Fixed point (`SpectralFixed`; every width a parameter, defaults in brackets). Rounding is round-half-up by
add-then-arithmetic-shift everywhere: rs(v, s) = (v + 2^(s-1)) >> s, rs(v, 0) = v (`hw.spec.arith.round_shift`).

* Activations in: signed act_bits [8], entering the FFT shifted left by in_shift guard bits [3 at N = 8:
  the most an unshifted forward FFT can take without overflow].
* FFT data path: signed data_bits [18, the ECP5 multiplier and block-RAM width] per component. Twiddles
  W_N^k = exp(-2 pi i k / N), k < N/2, as signed twiddle_bits [16] Q1.f, f = twiddle_bits - 2, per component:
  floor(cos * 2^f + 1/2), floor(-sin * 2^f + 1/2) (`twiddles`); 1 and -i are exact, so trivial twiddles need no
  special case. The inverse uses (wr, -wi).
* 1-D FFT (`fft_fixed`): radix-2 decimation in time; inputs in bit-reversed order, outputs natural;
  stages st = 0..log2 N - 1 with span m = 2^(st+1): for each group g and j < m/2, a = x[g m + j],
  b = x[g m + j + m/2], w = W_N^(j N/m), t = (rs(wr br - wi bi, f), rs(wr bi + wi br, f)) (one rounding per
  component of the exact complex product), x[g m + j] = rs(a + t, s_st), x[g m + j + m/2] = rs(a - t, s_st).
* Forward 2-D FFT (`fft2_fixed`): row FFTs (along the last axis, imaginary input 0), keep columns 0..N/2,
  then column FFTs of those N/2 + 1 columns. Stage shifts s_st (0 or 1): the log2 N row stages then the
  log2 N column stages (`SpectralFixed.forward_shifts`); by default a stage shifts only when a worst-case bound
  (`fft_bounds`) says it could overflow otherwise (none at N = 8). The result is DFT(x) 2^-E,
  E = sum(shifts) - in_shift (`forward_exponent`, -3 by default).
* Spectral weights: signed weight_bits [16] re/im (int16 in the file). MAC (`spectral_mac`): per tile and
  output channel, acc[k] = sum_i X_i[k] W[o, i][k] over the canonical bins, exact: no rounding, and
  acc_bits = data_bits + weight_bits + 1 + ceil(log2 max_c_in) [45] cannot overflow, so the order of the
  products is free.
* IFFT input (`ifft_input`): Y = clamp(rs(acc, mac_shift)) to signed data_bits - 1 [17] per component, then
  the non-canonical bins of columns 0 and N/2 are filled with the conjugates of their partners (a negated
  -2^16 is 2^16, which the 18-bit path holds).
* Inverse 2-D FFT (`ifft2_fixed`): column IFFTs of the N/2 + 1 columns, then each row is completed to N
  bins by Z[k2] = conj Z[N - k2] for k2 > N/2, run through a complex IFFT, and its real part kept. Every
  inverse stage shifts by 1: the IDFT's 1/N^2 exactly, and with the clamped input nothing can overflow.
* Overlap-add: exact integer sums, ola_bits = data_bits + ceil(log2 ceil(N/L)^2) [20].
* Output (`requantize`): y = clamp(rs(v * out_mult + bias_q[o], out_shift)) to signed out_bits [8], lower
  bound 0 with ReLU; out_mult unsigned, below 2^mult_bits [16]. Saturation happens here and at the IFFT
  input only; everywhere else the widths are proven sufficient.

Scales: x = x_q in_scale; W = (re + i im) weight_scale; a canvas value v means v 2^(mac_shift + E) in_scale
weight_scale (`canvas_scale`); y = y_q out_scale. `quant_params` derives out_mult, out_shift and bias_q from
them; the integers in `QuantParams` are what the hardware uses.

Bank-conflict-free order (`Schedule`): the input spectrum sits in B banks, bin index q in bank q mod B. Each
output channel's entries (its kernels' one after the other) are cut into groups of P lanes with distinct banks,
a group taking entries of several kernels where one kernel's are too few; a group's slots are sorted by bank,
and a short group is padded with zero entries on the lowest banks it leaves free (index = that bank
number), so with P = B lane j always reads bank j. The stream runs output channel after output channel, group
by group (`stream_entries`). The file (`save_spectral` / `load_spectral`; its arrays without the file: `layer_fields` /
`layer_from_fields`) is described in docs/formats.md.
"""
