//! The inner loops of edgeseg's tract ops: plain safe Rust over slices,
//! compiled for AVX2+FMA, SSE4.1 and NEON as well as the baseline, chosen at
//! run time (`multiversion`). The loops use separate multiplies and adds (no
//! `mul_add`), so every version rounds the same way and the FMA target only
//! brings wider vectors.

use multiversion::multiversion;

/// `acc[i] += w · x[i]` (over the shorter of the two).
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn axpy(acc: &mut [f32], w: f32, x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += w * v;
    }
}

/// Four `axpy`s of one row `x` into the four quarters of `acc` (`4 · x.len()`
/// values), with the four weights `w`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn axpy4(acc: &mut [f32], w: [f32; 4], x: &[f32]) {
    let n = x.len();
    if acc.len() < 4 * n {
        return;
    }
    let (a0, rest) = acc.split_at_mut(n);
    let (a1, rest) = rest.split_at_mut(n);
    let (a2, a3) = rest.split_at_mut(n);
    for ((((p0, p1), p2), p3), &v) in a0
        .iter_mut()
        .zip(a1.iter_mut())
        .zip(a2.iter_mut())
        .zip(a3.iter_mut())
        .zip(x)
    {
        *p0 += w[0] * v;
        *p1 += w[1] * v;
        *p2 += w[2] * v;
        *p3 += w[3] * v;
    }
}

/// `out[2i] = even[i] + bias`, `out[2i + 1] = odd[i] + bias`.
pub fn interleave2(out: &mut [f32], even: &[f32], odd: &[f32], bias: f32) {
    for ((pair, &e), &o) in out.chunks_exact_mut(2).zip(even).zip(odd) {
        pair[0] = e + bias;
        pair[1] = o + bias;
    }
}

/// `row[x] += t0·src[x] + t1·src[x + 1] + t2·src[x + 2]` (stride 1).
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn taps3(row: &mut [f32], src: &[f32], t: [f32; 3]) {
    let n = row.len();
    if src.len() < n + 2 {
        return;
    }
    let (s0, s1, s2) = (&src[..n], &src[1..n + 1], &src[2..n + 2]);
    for (((r, &a), &b), &c) in row.iter_mut().zip(s0).zip(s1).zip(s2) {
        *r += t[0] * a + t[1] * b + t[2] * c;
    }
}

/// Stride 2 on a row split into its even and odd columns:
/// `row[x] += t0·even[x] + t1·odd[x] + t2·even[x + 1]`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn taps3_split(row: &mut [f32], even: &[f32], odd: &[f32], t: [f32; 3]) {
    let n = row.len();
    if even.len() < n + 1 || odd.len() < n {
        return;
    }
    let (e0, o0, e1) = (&even[..n], &odd[..n], &even[1..n + 1]);
    for (((r, &a), &b), &c) in row.iter_mut().zip(e0).zip(o0).zip(e1) {
        *r += t[0] * a + t[1] * b + t[2] * c;
    }
}

/// `acc[i] += x[i]`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn add_to(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// `acc[i] += (x[i] − mean[i])²`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn add_squared_deviation(acc: &mut [f32], x: &[f32], mean: &[f32]) {
    for ((a, &v), &m) in acc.iter_mut().zip(x).zip(mean) {
        let d = v - m;
        *a += d * d;
    }
}

/// `out[i] = (x[i] − mean[i]) · rstd[i] · g + b`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn normalize_plane(out: &mut [f32], x: &[f32], mean: &[f32], rstd: &[f32], g: f32, b: f32) {
    for (((o, &v), &m), &r) in out.iter_mut().zip(x).zip(mean).zip(rstd) {
        *o = (v - m) * r * g + b;
    }
}

/// `out[i] = (x[i] − mean) · rstd · g[i] + b[i]`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
pub fn normalize_row(out: &mut [f32], x: &[f32], mean: f32, rstd: f32, g: &[f32], b: &[f32]) {
    for (((o, &v), &gi), &bi) in out.iter_mut().zip(x).zip(g).zip(b) {
        *o = (v - mean) * rstd * gi + bi;
    }
}
