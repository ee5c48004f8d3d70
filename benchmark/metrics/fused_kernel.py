"""The compiled row kernel of :mod:`.fused` (numba; imported only when that path runs).

Every loop body here is integer or float32 arithmetic that numba compiles to the same
IEEE operations XLA performs (no fast-math): see :mod:`.fused` for the passes.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

N_OTSU_BINS = 256  # :data:`.threshold.N_OTSU_BINS` (not imported: that module loads JAX)
# Otsu histogram slots: 2 * bin + (pixel in G); pixels outside Ω go to the last slot.
_OUTSIDE = 2 * N_OTSU_BINS

njit = numba.njit(nogil=True, cache=True, boundscheck=False)


@njit
def value_of(key: Any, scratch: Any) -> Any:
    """The float32 whose order key is ``key`` (scratch: a uint32 array of 1)."""
    bits = key & np.uint32(0x7FFFFFFF) if key >> np.uint32(31) else key ^ np.uint32(0xFFFFFFFF)
    scratch[0] = bits
    return scratch.view(np.float32)[0]


#: Biased exponent bits of 2**-100 (27 << 23): below it, S - min S may be subnormal.
_TINY_EXPONENT = np.uint32(27 << 23)
#: The smallest normal float32: XLA:CPU flushes anything smaller in magnitude to zero.
FLT_MIN = np.finfo(np.float32).tiny


@njit
def flushed(x: Any) -> Any:
    """``x``, or 0 where XLA:CPU's flush-to-zero mode makes a subnormal result 0."""
    return x if abs(x) >= FLT_MIN else np.float32(0.0)


@njit
def normalised(s: Any, lo: Any, hi: Any, span: Any, exact: bool) -> Any:
    """S̃ of :func:`.threshold.minmax_normalise` for ``span > 0``, as XLA:CPU computes it.

    With ``exact`` the difference and the quotient are flushed to zero when subnormal;
    without, the map holds no value below 2**-100 in magnitude (but 0), so S - min S is
    0 or at least 2**-123, and a subnormal quotient compares with the (flushed) taus and
    falls in Otsu's bin 0 as the 0 it becomes there: the same regions, and a loop that
    vectorises.
    """
    if s >= hi:
        return np.float32(1.0)
    if exact:
        return flushed(np.float32(flushed(np.float32(s - lo)) / span))
    return np.float32(np.float32(s - lo) / span)


@njit
def select(u: Any, gb: Any, cand: Any, m: int, k: int, h: Any) -> Any:
    """The k-th largest key t among the candidates ``cand[:m]`` (pixel indices into
    ``u``; 1 <= k <= m): ``(t, above, above_g, tied, tied_g)``, with how many of them
    have a larger key and key t, all and in G (``gb``).

    Radix selection by 11, 11 and 10 bits over histograms split by G; each level keeps,
    in place at the front of ``cand``, the candidates sharing the bits fixed so far.
    ``h`` is scratch of 4096.
    """
    above = 0
    above_g = 0
    prefix = np.uint32(0)
    b = 0
    for level in range(3):
        shift = np.uint32(21 - 11 * level) if level < 2 else np.uint32(0)
        width = 2048 if level < 2 else 1024
        h[: 2 * width] = 0
        for j in range(m):
            p = cand[j]
            h[2 * ((u[p] >> shift) & np.uint32(width - 1)) + gb[p]] += 1
        b = width - 1
        while above + h[2 * b] + h[2 * b + 1] < k:
            above += h[2 * b] + h[2 * b + 1]
            above_g += h[2 * b + 1]
            b -= 1
        prefix = np.uint32((prefix << np.uint32(11 if level < 2 else 10)) | np.uint32(b))
        if level < 2:
            n = 0
            for j in range(m):
                p = cand[j]
                cand[n] = p
                n += (u[p] >> shift) == prefix
            m = n
    return prefix, above, above_g, h[2 * b] + h[2 * b + 1], h[2 * b + 1]


@njit
def rows(start: int, stop: int, sal_bits: Any, ref: Any, roi: Any, has_roi: bool,
         sign_code: int, taus: Any, ks: Any, order: Any, otsu: bool, keep_keys: bool,
         want_peak: bool, flags: Any, n_g: Any, n_omega: Any, fixed: Any, top: Any,
         slots: Any, peak: Any, keys: Any, in_g: Any) -> None:  # fmt: skip
    """Maps ``start:stop``: see :func:`.fused.region_counts` for the arrays (``keys`` and
    ``in_g`` receive each map's order keys and G ∩ Ω when ``keep_keys``)."""
    n_pixels = sal_bits.shape[1]
    u_own = np.empty(n_pixels, np.uint32)  # order keys, 0 outside Ω
    sb = np.empty(n_pixels, np.uint32)  # bits of the sign-transformed S
    sf = sb.view(np.float32)
    gb_own = np.empty(n_pixels, np.uint8)  # G ∩ Ω
    cand = np.empty(n_pixels, np.int32)
    code = np.empty(n_pixels, np.int32)  # Otsu slots
    hs = np.zeros((4, _OUTSIDE + 1), np.int32)
    h = np.zeros(4096, np.int32)
    one = np.zeros(1, np.uint32)
    sign_bit = np.uint32(0x80000000)
    for i in range(start, stop):
        s_row = sal_bits[i]
        g_row = ref[i]
        u = keys[i] if keep_keys else u_own
        gb = in_g[i] if keep_keys else gb_own
        # Pass 1: keys, G as bytes, bounds (integer min / max of the keys), checks.
        bad_s = 0
        bad_g = 0
        count_g = 0
        count_omega = 0
        n_pos = 0
        n_zero = 0
        n_pos_g = 0
        n_zero_g = 0
        n_tiny = 0
        k_lo = np.uint32(0xFFFFFFFF)
        k_hi = np.uint32(0)
        clear_negative = sign_code == 0  # max(S, 0)
        magnitude = np.uint32(0x7FFFFFFF) if sign_code == 1 else np.uint32(0xFFFFFFFF)  # |S|
        for p in range(n_pixels):
            # Every value is cast back to uint32: numba widens integer arithmetic to 64
            # bits, which would halve the vector lanes and leave min / max scalar.
            bits = s_row[p]
            exponent = np.uint32(bits & np.uint32(0x7F800000))
            bad_s += exponent == np.uint32(0x7F800000)
            n_tiny += (exponent != 0) & (exponent < _TINY_EXPONENT)
            # XLA:CPU runs with denormals flushed to zero: a subnormal S is 0 there.
            bits = np.uint32(bits & sign_bit) if exponent == 0 else bits
            bits = np.uint32(0) if clear_negative and bits >= sign_bit else bits
            bits = np.uint32(bits & magnitude)
            bits = np.uint32(0) if bits == sign_bit else bits  # -0.0 -> +0.0
            sb[p] = bits
            key = np.uint32(bits ^ np.uint32(0xFFFFFFFF)) if bits >= sign_bit \
                else np.uint32(bits | sign_bit)
            gv = g_row[p]
            bad_g += (gv != 0) & (gv != 1)
            inside = True if not has_roi else roi[i, p] != 0
            key = key if inside else np.uint32(0)
            u[p] = key
            g_in = (gv == 1) & inside
            gb[p] = g_in
            count_g += g_in
            count_omega += inside
            n_pos += int(key > sign_bit)
            n_zero += int(key == sign_bit)
            n_pos_g += int(key > sign_bit) & g_in
            n_zero_g += int(key == sign_bit) & g_in
            k_lo = min(k_lo, key if inside else np.uint32(0xFFFFFFFF))
            k_hi = max(k_hi, key)
        flags[i, 0] = bad_s == 0
        flags[i, 1] = bad_g == 0
        n_g[i] = count_g
        n_omega[i] = count_omega
        if bad_s or bad_g:
            continue  # rejected by the caller; nothing below may index by its values
        lo = value_of(k_lo, one) if count_omega else np.float32(np.inf)
        hi = value_of(k_hi, one) if count_omega else np.float32(-np.inf)
        span = flushed(np.float32(hi - lo))
        exact = n_tiny > 0
        if want_peak:  # the pointing game: the maximal pixels of Ω, and those in G
            n_m = 0
            n_mg = 0
            for p in range(n_pixels):
                at_peak = (u[p] == k_hi) & (u[p] != 0)
                n_m += at_peak
                n_mg += at_peak & (gb[p] != 0)
            peak[i, 0] = n_m
            peak[i, 1] = n_mg
        # Pass 2: S̃ (as minmax_normalise), counts at each fixed tau.
        for j in range(taus.shape[0]):
            tau = taus[j]
            n_a = 0
            n_ag = 0
            if span > 0:
                for p in range(n_pixels):
                    v = normalised(sf[p], lo, hi, span, exact)
                    a = (v >= tau) & (u[p] != 0)
                    n_a += a
                    n_ag += a & (gb[p] != 0)
            elif tau <= 0:  # S̃ = 0 everywhere
                n_a = count_omega
                n_ag = count_g
            fixed[i, j, 0] = n_a
            fixed[i, j, 1] = n_ag
        # Otsu's bin of S̃ for every pixel, as slot 2 * bin + (pixel in G), bin =
        # min(floor(256 S̃), 255): computed in one vectorised loop, counted in the next
        # (a scatter stops vectorisation). The top-K cut reads the same histogram: S̃ is
        # monotone in S, so the k-th largest key lies in the bin where the counts from
        # the top reach k, and only that bin's pixels are candidates.
        n_top = ks.shape[1]
        if not (otsu or n_top):
            continue
        for p in range(n_pixels):
            v = np.float32(0.0)
            if span > 0:
                v = normalised(sf[p], lo, hi, span, exact)
            level = min(np.int32(v * np.float32(N_OTSU_BINS)), np.int32(N_OTSU_BINS - 1))
            code[p] = 2 * level + gb[p] if u[p] != 0 else _OUTSIDE
        # Four interleaved histograms: runs of equal values (the zeros of S+) would
        # otherwise wait on one counter.
        hs[:, :] = 0
        for p in range(n_pixels):
            hs[p & 3, code[p]] += 1
        for q in range(_OUTSIDE):
            hs[0, q] += hs[1, q] + hs[2, q] + hs[3, q]
        if otsu:
            for q in range(_OUTSIDE):
                slots[i, q] = hs[0, q]
        for j in range(n_top):
            k = ks[i, j] if ks[i, j] >= 0 else count_g  # -1: the top-|G| (rank accuracy)
            if k < 1:
                top[i, j, 0] = 0
                top[i, j, 1] = 0
                continue
            if n_pos < k <= n_pos + n_zero:  # the cut falls among the zeros (S+)
                t, above, n_ag, tied, tied_g = sign_bit, n_pos, n_pos_g, n_zero, n_zero_g
            else:
                # The bin holding the k-th largest S̃; the bins above it are all in A.
                above = 0
                n_ag = 0
                cut_bin = N_OTSU_BINS - 1
                while above + hs[0, 2 * cut_bin] + hs[0, 2 * cut_bin + 1] < k:
                    above += hs[0, 2 * cut_bin] + hs[0, 2 * cut_bin + 1]
                    n_ag += hs[0, 2 * cut_bin + 1]
                    cut_bin -= 1
                m = 0
                for p in range(n_pixels):
                    cand[m] = p
                    m += (code[p] >> 1) == cut_bin
                t, above_in, above_in_g, tied, tied_g = select(u, gb, cand, m, k - above, h)
                above += above_in
                n_ag += above_in_g
            if tied > k - above:
                # Cut the tie group: its first k - above pixels in tie-break order.
                c = above
                q = 0
                while c < k:
                    p = order[q]
                    win = u[p] == t
                    c += win
                    n_ag += win & (gb[p] != 0)
                    q += 1
                n_a = k
            else:
                n_a = above + tied
                n_ag += tied_g
            top[i, j, 0] = n_a
            top[i, j, 1] = n_ag

