//! Medians and the tables the load generator prints (Markdown, pasted into the docs as is).

/// Median, min and max of `v` (not empty).
pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `median (min–max)` with `decimals` digits.
pub fn cell(v: &[f64], decimals: usize) -> String {
    let (m, lo, hi) = stats(v.to_vec());
    format!(
        "{} ({}–{})",
        num(m, decimals),
        num(lo, decimals),
        num(hi, decimals)
    )
}

/// A number with thousands separators.
pub fn num(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let (int, frac) = s
        .split_once('.')
        .map_or((&s[..], None), |(a, b)| (a, Some(b)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// The median of `a` over the median of `b`, as `1.23x`.
pub fn ratio(a: &[f64], b: &[f64]) -> String {
    let (ma, mb) = (stats(a.to_vec()).0, stats(b.to_vec()).0);
    if mb == 0.0 {
        "—".into()
    } else {
        format!("{:.2}x", ma / mb)
    }
}
