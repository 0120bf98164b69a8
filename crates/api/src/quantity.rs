//! Resource quantities (`128Mi`, `500m`, `1.5`, `2e3`), as `resources.limits` and
//! `resources.requests` write them.

/// The value of a quantity in base units (bytes, cores), or None if it is not one.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    let result = value * scale;
    result.is_finite().then_some(result)
}

/// Whole bytes of a memory quantity (rounded up, as the kernel counts pages anyway).
pub fn bytes(text: &str) -> Option<u64> {
    parse(text).filter(|v| *v >= 0.0).map(|v| v.ceil() as u64)
}

/// Millicores of a CPU quantity (`500m` → 500, `1.5` → 1500).
pub fn millicores(text: &str) -> Option<u64> {
    parse(text).filter(|v| *v >= 0.0).map(|v| (v * 1000.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("2e3"), Some(2000));
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("2"), Some(2000));
        for bad in ["", "Mi", "12Q", "1..2", "-1Gi"] {
            assert_eq!(bytes(bad), None, "{bad:?}");
        }
    }
}
