//! Durations and byte sizes as people type them, parsed in one place for every command.
//!
//! Durations: anything `humantime` reads (`250ms`, `10s`, `1m`, `1h 30m`, `2days`), or a bare
//! number of seconds (`30`, `0.5`), which is what wrk and most servers' config files take.
//! Sizes: a bare byte count (`4096`) or a number with a decimal or binary unit (`16KiB`,
//! `1MiB`, `64k`, `1.5 MB`), read by `parse-size`.

use std::time::Duration;

/// Longest duration any flag takes (about 31 years): beyond it a value is a typo.
const MAX_SECS: f64 = 1e9;

/// Parse a duration (see the module docs). `0` is a valid duration (flags use it for "off").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration (examples: 500ms, 10s, 1m)".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().map_err(|_| format!("invalid duration '{t}' (examples: 500ms, 10s, 1m)"))?;
        if !secs.is_finite() || secs > MAX_SECS {
            return Err(format!("duration out of range: '{t}'"));
        }
        return Ok(Duration::from_secs_f64(secs));
    }
    let d =
        humantime::parse_duration(t).map_err(|e| format!("invalid duration '{t}': {e} (examples: 500ms, 10s, 1m)"))?;
    if d.as_secs_f64() > MAX_SECS {
        return Err(format!("duration out of range: '{t}'"));
    }
    Ok(d)
}

/// Parse a byte size (see the module docs).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    parse_size::parse_size(t).map_err(|e| format!("invalid size '{t}': {e} (examples: 64, 16KiB, 1MiB)"))
}

/// [`parse_size`] into a `usize`.
pub fn parse_size_usize(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    usize::try_from(n).map_err(|_| format!("size out of range: '{}'", s.trim()))
}

/// [`parse_size`] into a `u32` (buffer sizes).
pub fn parse_size_u32(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    u32::try_from(n).map_err(|_| format!("size out of range: '{}' (at most 4GiB)", s.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_wrk_and_humantime() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1.2.3").is_err());
        assert!(parse_duration("99999999999").is_err());
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("1 MB"), Ok(1_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size_u32("8GiB").is_err());
    }
}
