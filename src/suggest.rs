//! "Did you mean": the known key nearest to a mistyped one.
//!
//! Pure functions over strings. The distance is Damerau-Levenshtein in its restricted form
//! (insert, delete, substitute, swap two neighbours, each costing one): `adress`,
//! `allow-invalid-cert`, `tls.implict` and `timoeut` are all one step from the real key.

/// Edits between `a` and `b`, counted in characters.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the classic table: two rows back are needed for a swap.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// How many edits still read as a typo of a key of `len` characters: one for short keys,
/// growing by one every 8 characters, never more than 3 (beyond that, unrelated keys of
/// similar length start to match each other).
pub fn threshold(len: usize) -> usize {
    (1 + len / 8).min(3)
}

/// The known key nearest to `key`: the closest within [`threshold`] (the first one on a
/// tie), else one whose last dotted part is the same (`implicit` for `tls.implicit`: the
/// right key in the wrong table). `None` when nothing is close.
pub fn nearest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let within = known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, _)| *d <= threshold(key.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    within.or_else(|| {
        let last = key.rsplit('.').next()?;
        known
            .iter()
            .find(|k| k.rsplit('.').next() == Some(last))
            .copied()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        let cases = [
            ("", "", 0),
            ("port", "port", 0),
            ("", "port", 4),
            ("port", "", 4),
            ("adress", "address", 1),
            ("tls.allow-invalid-cert", "tls.allow-invalid-certs", 1),
            ("timoeut", "timeout", 1),
            ("tls.implict", "tls.implicit", 1),
            ("Type", "type", 1),
            ("kitten", "sitting", 3),
            ("ca", "abc", 3),
            ("größe", "grösse", 2),
        ];
        for (a, b, d) in cases {
            assert_eq!(distance(a, b), d, "{a:?} -> {b:?}");
            assert_eq!(distance(b, a), d, "{b:?} -> {a:?}");
        }
    }

    #[test]
    fn thresholds() {
        let cases = [(1, 1), (4, 1), (7, 1), (8, 2), (15, 2), (16, 3), (40, 3)];
        for (len, t) in cases {
            assert_eq!(threshold(len), t, "length {len}");
        }
    }

    #[test]
    fn nearest_known_key() {
        let known = [
            "type",
            "address",
            "host",
            "port",
            "timeout",
            "tls.implicit",
            "tls.allow-invalid-certs",
            "pool.max-connections",
            "pool.timeout.wait",
        ];
        let cases = [
            ("adress", Some("address")),
            ("tls.allow-invalid-cert", Some("tls.allow-invalid-certs")),
            ("pool.max-conections", Some("pool.max-connections")),
            ("prot", Some("port")),
            ("implicit", Some("tls.implicit")),
            ("pool.wait", Some("pool.timeout.wait")),
            ("bogus", None),
            ("tls.verify", None),
            ("x", None),
        ];
        for (key, expected) in cases {
            assert_eq!(nearest(key, &known), expected, "{key:?}");
        }
    }
}
