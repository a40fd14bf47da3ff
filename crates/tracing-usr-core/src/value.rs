//! Conversion of field values to the strings the contract exports (spec a.2).

/// Formats an `f64` as the contract says: the shortest round-trip decimal that always contains a
/// `.` or an exponent (`1.0`, `1.5`, `1e+300`, as `serde_json` writes it), and `NaN`, `inf`, `-inf` for non-finite values.
///
/// ```
/// use tracing_usr_core::value::format_f64;
/// assert_eq!(format_f64(1.0), "1.0");
/// assert_eq!(format_f64(1.5), "1.5");
/// assert_eq!(format_f64(f64::NEG_INFINITY), "-inf");
/// ```
pub fn format_f64(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    match serde_json::Number::from_f64(value) {
        Some(n) => n.to_string(),
        None => value.to_string(),
    }
}

/// Formats a boolean as the contract says: `"true"` / `"false"`.
pub fn format_bool(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
///
/// ```
/// use tracing_usr_core::value::truncate;
/// let mut text = "héllo".to_owned();
/// truncate(&mut text, 2);
/// assert_eq!(text, "h");
/// ```
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_keep_a_decimal_point_or_exponent() {
        assert_eq!(format_f64(1.0), "1.0");
        assert_eq!(format_f64(-0.25), "-0.25");
        assert_eq!(format_f64(1e300), "1e+300");
        assert_eq!(format_f64(f64::NAN), "NaN");
        assert_eq!(format_f64(f64::INFINITY), "inf");
    }
}
