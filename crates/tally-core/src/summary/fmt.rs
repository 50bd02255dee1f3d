//! Number formatting shared by the report's texts (findings, HTML pages,
//! notification digests). A leaf module: it imports nothing of tally.

/// `1234567` → `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::group(1_234_567), "1,234,567");
        assert_eq!(super::group(12), "12");
        assert_eq!(super::group(0), "0");
    }
}
