//! Value parsers shared by every program: exact decimal durations with RSPLIB's clamps,
//! clamped counts, identifiers (`0xHEX` or decimal), fractions, pool handles.
//!
//! RSPLIB reads numbers with `atol`/`atof` and then clamps them into a range; it silently
//! turns garbage into 0. These parsers clamp the same way but reject text that is not a
//! number, so a typo is reported instead of becoming 0.

use std::time::Duration;

use rserpool_proto::ids::PoolHandle;

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000_000_000;

/// Parses an optionally signed decimal number (`12`, `-3`, `2444.444`, `+0.5`) exactly,
/// scaled by `unit_nanos` (the number of nanoseconds of one unit). Returns the sign and the
/// magnitude in nanoseconds; digits below one nanosecond are truncated.
fn parse_decimal_nanos(s: &str, unit_nanos: u128) -> Result<(bool, u128), String> {
    let t = s.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(format!("'{s}' is not a number"));
    }
    // Saturating: an absurdly large number clamps to the maximum like any other large one.
    let mut value: u128 = 0;
    for b in int_part.bytes() {
        value = value
            .saturating_mul(10)
            .saturating_add(u128::from(b - b'0'));
    }
    value = value.saturating_mul(unit_nanos);
    // Fraction: each digit is worth unit_nanos / 10^k.
    let mut scale = unit_nanos;
    for b in frac_part.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        value = value.saturating_add(u128::from(b - b'0') * scale);
    }
    Ok((negative, value))
}

fn duration_from_nanos(n: u128) -> Duration {
    let secs = n / NANOS_PER_S;
    let sub = (n % NANOS_PER_S) as u32; // < 10^9, always fits
    Duration::new(u64::try_from(secs).unwrap_or(u64::MAX), sub)
}

/// Parses a decimal number in `unit_nanos` units and clamps it into `[min, max]` (both in
/// nanoseconds). Negative numbers clamp to `min`.
fn clamped_duration(s: &str, unit_nanos: u128, min: u128, max: u128) -> Result<Duration, String> {
    let (negative, n) = parse_decimal_nanos(s, unit_nanos)?;
    let n = if negative { min } else { n.clamp(min, max) };
    Ok(duration_from_nanos(n))
}

/// Milliseconds, clamped into `[MIN, MAX]` ms (RSPLIB's clamping of `-option=ms` values).
/// Fractions of a millisecond are accepted (`2444.444`).
pub fn millis<const MIN: u64, const MAX: u64>(s: &str) -> Result<Duration, String> {
    clamped_duration(
        s,
        NANOS_PER_MS,
        u128::from(MIN) * NANOS_PER_MS,
        u128::from(MAX) * NANOS_PER_MS,
    )
}

/// Milliseconds without an upper bound, at least `MIN` ms.
pub fn millis_min<const MIN: u64>(s: &str) -> Result<Duration, String> {
    millis::<MIN, { u64::MAX / 1000 }>(s)
}

/// Seconds (fractions allowed), clamped into `[MIN_MS, MAX_MS]` milliseconds.
pub fn seconds<const MIN_MS: u64, const MAX_MS: u64>(s: &str) -> Result<Duration, String> {
    clamped_duration(
        s,
        NANOS_PER_S,
        u128::from(MIN_MS) * NANOS_PER_MS,
        u128::from(MAX_MS) * NANOS_PER_MS,
    )
}

/// Seconds (fractions allowed), at least `MIN_MS` milliseconds, no upper bound.
pub fn seconds_min<const MIN_MS: u64>(s: &str) -> Result<Duration, String> {
    seconds::<MIN_MS, { u64::MAX / 1000 }>(s)
}

/// An integer clamped into `[MIN, MAX]`; negative values clamp to `MIN`.
pub fn count<const MIN: u64, const MAX: u64>(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..).unwrap_or("")),
        Some(b'+') => (false, t.get(1..).unwrap_or("")),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not an integer"));
    }
    if negative {
        return Ok(MIN);
    }
    // Saturate huge inputs to MAX instead of failing: that is what a clamp means.
    let v = digits.parse::<u64>().unwrap_or(u64::MAX);
    Ok(v.clamp(MIN, MAX))
}

/// [`count`] as a `u32`.
pub fn count_u32<const MIN: u32, const MAX: u32>(s: &str) -> Result<u32, String> {
    let v = count::<0, { u64::MAX }>(s)?;
    // A negative value comes back as 0 and clamps to MIN below.
    Ok(u32::try_from(v).unwrap_or(u32::MAX).clamp(MIN, MAX))
}

/// A floating-point number clamped into `[MIN_MILLI / 1000, MAX_MILLI / 1000]`.
pub fn float_clamped<const MIN_MILLI: u64, const MAX_MILLI: u64>(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    let min = MIN_MILLI as f64 / 1000.0;
    let max = MAX_MILLI as f64 / 1000.0;
    Ok(v.clamp(min, max))
}

/// A finite floating-point number.
pub fn parse_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() {
        return Err(format!("'{s}' is not a finite number"));
    }
    Ok(v)
}

/// A 32-bit identifier written as `0xHEX` or decimal (RSPLIB's `-identifier=`).
pub fn identifier(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    parsed.map_err(|_| format!("'{s}' is not a 32-bit identifier (use 0xHEX or decimal)"))
}

/// A pool handle: 1 to 32 bytes ([`PoolHandle::RSPLIB_MAX_LEN`]), as RSPLIB accepts.
pub fn pool_handle(s: &str) -> Result<PoolHandle, String> {
    if s.is_empty() {
        return Err("the pool handle must not be empty".into());
    }
    if s.len() > PoolHandle::RSPLIB_MAX_LEN {
        return Err(format!(
            "pool handle '{s}' is {} bytes long; at most {} are allowed",
            s.len(),
            PoolHandle::RSPLIB_MAX_LEN
        ));
    }
    Ok(PoolHandle::from(s))
}

/// Converts a fraction in `[0, 1]` into the full `u32` range as RSPLIB does
/// (`rint(f × 0xffffffff)`, ties to even). The caller checks the range.
pub fn scale_fraction(f: f64) -> u32 {
    let v = (f * f64::from(u32::MAX)).round_ties_even();
    if v <= 0.0 {
        0
    } else if v >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        v as u32
    }
}

/// A rate limit in requests per second; `None` (any value ≤ 0, RSPLIB's −1) is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct RateLimit(pub Option<f64>);

impl RateLimit {
    /// No limit.
    pub const UNLIMITED: RateLimit = RateLimit(None);

    /// Requests per second, or `None` when unlimited.
    pub fn per_second(self) -> Option<f64> {
        self.0
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("unlimited") {
            return Ok(RateLimit(None));
        }
        let v = parse_f64(s)?;
        Ok(RateLimit(if v > 0.0 { Some(v) } else { None }))
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("-1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_exact_and_clamped() {
        assert_eq!(
            millis::<1000, 300_000>("2444.444"),
            Ok(Duration::from_micros(2_444_444))
        );
        assert_eq!(millis::<1000, 300_000>("5"), Ok(Duration::from_secs(1)));
        assert_eq!(
            millis::<1000, 300_000>("999999999"),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(millis::<1000, 300_000>("-7"), Ok(Duration::from_secs(1)));
        assert_eq!(millis::<0, 10>(".5"), Ok(Duration::from_micros(500)));
        assert!(millis::<0, 10>("abc").is_err());
        assert!(millis::<0, 10>("").is_err());
        assert!(millis::<0, 10>("1.2.3").is_err());
        assert!(millis::<0, 10>("-").is_err());
        assert!(millis::<0, 10>(".").is_err());
        // Enormous input saturates to the maximum instead of failing or panicking.
        assert_eq!(
            millis::<0, 10>(&"9".repeat(60)),
            Ok(Duration::from_millis(10))
        );
        assert_eq!(
            millis_min::<0>("18446744073709551"),
            Ok(Duration::from_millis(18_446_744_073_709_551))
        );
    }

    #[test]
    fn seconds_fractional() {
        assert_eq!(seconds_min::<0>("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(seconds_min::<100>("0.01"), Ok(Duration::from_millis(100)));
        assert_eq!(seconds_min::<0>("86400"), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            seconds_min::<0>("1.000000000999"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn counts_clamp() {
        assert_eq!(count::<1, 50_000>("0"), Ok(1));
        assert_eq!(count::<1, 50_000>("-4"), Ok(1));
        assert_eq!(count::<1, 50_000>("99999999999999999999999"), Ok(50_000));
        assert_eq!(count::<1, 50_000>("12"), Ok(12));
        assert!(count::<1, 50_000>("12x").is_err());
        assert!(count::<1, 50_000>("").is_err());
        assert_eq!(count_u32::<1, 255>("300"), Ok(255));
        assert_eq!(count_u32::<1, 255>("-300"), Ok(1));
        assert_eq!(count_u32::<0, { u32::MAX }>("99999999999"), Ok(u32::MAX));
    }

    #[test]
    fn identifiers() {
        assert_eq!(identifier("0x1234abcd"), Ok(0x1234_abcd));
        assert_eq!(identifier("0XFF"), Ok(255));
        assert_eq!(identifier("4294967295"), Ok(u32::MAX));
        assert!(identifier("4294967296").is_err());
        assert!(identifier("0x1_0000_0000").is_err());
        assert!(identifier("0x").is_err());
        assert!(identifier("-1").is_err());
        assert!(identifier("zz").is_err());
    }

    #[test]
    fn fractions_scale_like_rint() {
        assert_eq!(scale_fraction(0.0), 0);
        assert_eq!(scale_fraction(1.0), u32::MAX);
        assert_eq!(scale_fraction(0.5), 2_147_483_648); // 2147483647.5 → even
        assert_eq!(scale_fraction(0.25), 1_073_741_824); // 1073741823.75 → up
        assert_eq!(scale_fraction(-1.0), 0);
        assert_eq!(scale_fraction(2.0), u32::MAX);
    }

    #[test]
    fn floats_and_rates() {
        assert_eq!(float_clamped::<0, 1000>("1.5"), Ok(1.0));
        assert_eq!(float_clamped::<0, 1000>("-1"), Ok(0.0));
        assert_eq!(float_clamped::<0, 1000>("0.25"), Ok(0.25));
        assert!(float_clamped::<0, 1000>("nan").is_err());
        assert!(float_clamped::<0, 1000>("inf").is_err());
        assert_eq!("-1".parse::<RateLimit>(), Ok(RateLimit::UNLIMITED));
        assert_eq!("0".parse::<RateLimit>(), Ok(RateLimit::UNLIMITED));
        assert_eq!("unlimited".parse::<RateLimit>(), Ok(RateLimit::UNLIMITED));
        assert_eq!("2.5".parse::<RateLimit>(), Ok(RateLimit(Some(2.5))));
        assert!("fast".parse::<RateLimit>().is_err());
    }

    #[test]
    fn pool_handles() {
        assert_eq!(pool_handle("EchoPool"), Ok(PoolHandle::from("EchoPool")));
        assert!(pool_handle("").is_err());
        assert!(pool_handle(&"x".repeat(32)).is_ok());
        assert!(pool_handle(&"x".repeat(33)).is_err());
    }
}
