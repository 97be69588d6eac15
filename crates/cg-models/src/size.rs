//! Human byte sizes: parsing what users type (`20GiB`, `500MB`, `1.5G`, `1048576`) and
//! formatting sizes, speeds and durations for people.
//!
//! Units, chosen to match `du`, Docker and the Hugging Face tools rather than to guess:
//!
//! | suffix | meaning |
//! |---|---|
//! | none or `B` | bytes |
//! | `KiB`, `MiB`, `GiB`, `TiB` | powers of 1024 (IEC) |
//! | `K`, `M`, `G`, `T` (a bare letter) | powers of 1024 |
//! | `kB`/`KB`, `MB`, `GB`, `TB` | powers of 1000 (SI) |
//!
//! So a bare letter is binary (`1.5G` = 1.5 × 2³⁰, like `du -h` and `docker --memory`), and a
//! letter followed by `B` is decimal (`500MB` = 500 × 10⁶, like disk vendors and the Hub's web
//! pages). Units are case-insensitive, a space between number and unit is allowed, and a
//! fraction is allowed (`1.5G`); the result is rounded down to whole bytes.

use std::time::Duration;

/// Parses a human size such as `20GiB`, `500MB`, `1.5G` or `1048576` into bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number = number.replace('_', "");
    if number.is_empty() || number == "." {
        return Err(format!(
            "`{text}` is not a size; write a number with an optional unit, e.g. 20GiB, 500MB, 1.5G or 1048576"
        ));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`; use B, K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000)"
            ))
        }
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("`{text}` is too large"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: `{number}` is not a number"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is too large"));
    }
    Ok(bytes.floor() as u64)
}

/// Formats bytes with binary units and about three significant digits: `999 B`, `1.50 KiB`,
/// `12.3 MiB`, `1.25 GiB`. At most 8 characters up to 1023 TiB.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // Round first, so 1023.96 shows as "1024 KiB" rather than "1023.96".
    if value < 9.995 {
        format!("{value:.2} {}", UNITS[unit])
    } else if value < 99.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Formats a transfer speed: `12.3 MiB/s`.
pub(crate) fn format_speed(bytes_per_sec: u64) -> String {
    format!("{}/s", format_size(bytes_per_sec))
}

/// Formats a duration compactly: `0.4s`, `2s`, `12s`, `3m05s`, `1h02m`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 10 && duration.subsec_millis() == 0 {
        format!("{secs}s")
    } else if secs < 10 {
        format!("{:.1}s", duration.as_secs_f64())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// The time left to move `remaining` bytes at `speed` bytes per second, if it can be told.
pub(crate) fn eta(remaining: u64, speed: u64) -> Option<Duration> {
    (speed > 0).then(|| Duration::from_secs(remaining.div_ceil(speed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_and_b_suffix() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size(" 512 b "), Ok(512));
        assert_eq!(parse_size("1_000"), Ok(1000));
    }

    #[test]
    fn binary_units_with_and_without_i() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("20gib"), Ok(20 << 30));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("3 MiB"), Ok(3 << 20));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn decimal_units_end_in_b() {
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("500mb"), Ok(500_000_000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("2kB"), Ok(2000));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
    }

    #[test]
    fn fractions_round_down() {
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("1.0001K"), Ok(1024));
        assert_eq!(parse_size(".5K"), Ok(512));
    }

    #[test]
    fn rejects_nonsense_with_a_useful_message() {
        for bad in ["", "GiB", "-1", "1.2.3G", "12XB", "ten", "."] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        assert!(parse_size("12XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("1e30G").is_err());
    }

    #[test]
    fn formatting_is_compact_and_binary() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.50 KiB");
        assert_eq!(format_size(12_900_000), "12.3 MiB");
        assert_eq!(format_size(1_340_616_616), "1.25 GiB");
        assert_eq!(format_size(1_073_741_823), "1024 MiB");
        assert_eq!(format_speed(2 << 20), "2.00 MiB/s");
        for n in [1u64, 1023, 1024, 10_234, 1 << 30, (1 << 40) * 1023] {
            assert!(format_size(n).len() <= 8, "{}", format_size(n));
        }
    }

    #[test]
    fn durations_and_eta() {
        assert_eq!(format_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
        assert_eq!(eta(100, 0), None);
        assert_eq!(eta(101, 10), Some(Duration::from_secs(11)));
    }
}
