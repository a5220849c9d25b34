//! The value syntaxes of the attribute: durations, sizes, positive decimals.
//!
//! Each parser returns the normalised value or why the text is not one; the caller adds the
//! option's name and the span.

/// The accepted forms of a duration, as said in error messages.
pub const DURATION_FORMS: &str = r#"a whole number and a unit, like "500ms", "2s" or "1m""#;

/// The accepted forms of a size, as said in error messages.
pub const SIZE_FORMS: &str =
    r#"a whole number of bytes, or with a unit, like "64MiB", "64MB", "512KiB", "1GiB" or "4096""#;

/// The accepted forms of a percentage, as said in error messages.
pub const PERCENT_FORMS: &str =
    r#"a number of percent above 0 and at most 100, with the sign, like "10%" or "2.5%""#;

/// Why a value was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not of the syntax at all.
    Syntax,
    /// Of the syntax, but does not fit in a `u64` once normalised.
    TooLarge,
}

/// `"500ms"`, `"2s"`, `"1m"`: a whole number and a unit, no space; returns milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, Invalid> {
    let (number, unit) = split_number(text).ok_or(Invalid::Syntax)?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(Invalid::Syntax),
    };
    scale(number, factor)
}

/// `"64MiB"`, `"64MB"`, `"512KiB"`, `"1GiB"`, `"4096"`: returns bytes (KiB = 2^10, KB = 10^3).
pub fn size_bytes(text: &str) -> Result<u64, Invalid> {
    let (number, unit) = split_number(text).ok_or(Invalid::Syntax)?;
    let factor = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(Invalid::Syntax),
    };
    scale(number, factor)
}

/// A positive decimal number: digits, optionally a point and more digits (`"0.5"`, `"2"`).
pub fn is_positive_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = digits(whole) && fraction.is_none_or(digits);
    well_formed && text.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// `"10%"`, `"2.5%"`, `"100%"`: a positive decimal followed by `%`, at most 100; returns the
/// number of percent as written (`"10"`), which the runtime reads as a probability.
pub fn percent(text: &str) -> Result<&str, Invalid> {
    let number = text.strip_suffix('%').ok_or(Invalid::Syntax)?;
    if !is_positive_decimal(number) {
        return Err(Invalid::Syntax);
    }
    match number.parse::<f64>() {
        Ok(v) if v <= 100.0 => Ok(number),
        _ => Err(Invalid::TooLarge),
    }
}

/// Splits `"64MiB"` into `("64", "MiB")`; `None` unless it starts with a digit.
/// Whether `text` can name a process by its command line: 1-64 printable ASCII characters,
/// no quotes or backslashes.
pub fn is_process_pattern(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\') || c == ' ')
        && !text.trim().is_empty()
}

/// A signed duration in ms: `"+60m"`, `"-30s"`, `"90s"` (ahead); not zero.
pub fn offset_ms(text: &str) -> Result<i64, Invalid> {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let ms = duration_ms(rest)?;
    if ms == 0 {
        return Err(Invalid::Syntax);
    }
    i64::try_from(ms)
        .map(|ms| sign * ms)
        .map_err(|_| Invalid::TooLarge)
}

/// An HTTP status: 100-599.
pub fn http_status(text: &str) -> Option<u16> {
    text.parse().ok().filter(|s| (100..=599).contains(s))
}

/// Whether `text` is a path prefix: starts with `/`, printable ASCII without spaces, quotes
/// or backslashes, at most 200 characters.
pub fn is_path_prefix(text: &str) -> bool {
    text.starts_with('/')
        && text.len() <= 200
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\'))
}

fn split_number(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

fn scale(number: &str, factor: u64) -> Result<u64, Invalid> {
    let number: u64 = number.parse().map_err(|_| Invalid::TooLarge)?;
    number.checked_mul(factor).ok_or(Invalid::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_need_their_sign_and_stay_within_100() {
        assert_eq!(percent("10%"), Ok("10"));
        assert_eq!(percent("2.5%"), Ok("2.5"));
        assert_eq!(percent("100%"), Ok("100"));
        assert_eq!(percent("10"), Err(Invalid::Syntax));
        assert_eq!(percent("0%"), Err(Invalid::Syntax));
        assert_eq!(percent("-5%"), Err(Invalid::Syntax));
        assert_eq!(percent("101%"), Err(Invalid::TooLarge));
        assert_eq!(percent("ten%"), Err(Invalid::Syntax));
    }

    #[test]
    fn offsets_are_signed_durations() {
        assert_eq!(offset_ms("+60m"), Ok(3_600_000));
        assert_eq!(offset_ms("-30s"), Ok(-30_000));
        assert_eq!(offset_ms("90s"), Ok(90_000));
        assert!(offset_ms("+0s").is_err());
        assert!(offset_ms("+1h").is_err());
        assert!(offset_ms("soon").is_err());
    }

    #[test]
    fn http_statuses_and_paths() {
        assert_eq!(http_status("503"), Some(503));
        assert_eq!(http_status("99"), None);
        assert_eq!(http_status("600"), None);
        assert_eq!(http_status("5xx"), None);
        assert!(is_path_prefix("/orders"));
        assert!(is_path_prefix("/"));
        assert!(!is_path_prefix("orders"));
        assert!(!is_path_prefix("/a b"));
    }

    #[test]
    fn process_patterns_are_short_printable_words() {
        assert!(is_process_pattern("walwriter"));
        assert!(is_process_pattern("postgres: checkpointer"));
        assert!(!is_process_pattern(""));
        assert!(!is_process_pattern("  "));
        assert!(!is_process_pattern("a\"b"));
        assert!(!is_process_pattern(&"x".repeat(65)));
    }

    #[test]
    fn durations_in_each_unit() {
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("2s"), Ok(2_000));
        assert_eq!(duration_ms("1m"), Ok(60_000));
        assert_eq!(duration_ms("0s"), Ok(0));
        assert_eq!(duration_ms("007ms"), Ok(7));
    }

    #[test]
    fn durations_refused() {
        for text in [
            "", "2", "s", "ms", "2 s", " 2s", "2s ", "2sec", "2S", "1h", "1.5s", "-1s", "2ms5",
            "+2s", "２s",
        ] {
            assert_eq!(duration_ms(text), Err(Invalid::Syntax), "{text:?}");
        }
    }

    #[test]
    fn durations_too_large() {
        assert_eq!(
            duration_ms("99999999999999999999ms"),
            Err(Invalid::TooLarge)
        );
        assert_eq!(duration_ms("18446744073709551615m"), Err(Invalid::TooLarge));
        assert_eq!(duration_ms("18446744073709551615ms"), Ok(u64::MAX));
    }

    #[test]
    fn sizes_binary_and_decimal() {
        assert_eq!(size_bytes("4096"), Ok(4096));
        assert_eq!(size_bytes("4096B"), Ok(4096));
        assert_eq!(size_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(size_bytes("64MiB"), Ok(64 * 1024 * 1024));
        assert_eq!(size_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(size_bytes("64MB"), Ok(64_000_000));
        assert_eq!(size_bytes("1KB"), Ok(1_000));
        assert_eq!(size_bytes("1kB"), Ok(1_000));
        assert_eq!(size_bytes("2GB"), Ok(2_000_000_000));
    }

    #[test]
    fn sizes_refused() {
        for text in [
            "", "MiB", "64 MiB", "64mib", "64Mb", "64M", "1.5MiB", "-1", "64MiBs", "1TiB",
        ] {
            assert_eq!(size_bytes(text), Err(Invalid::Syntax), "{text:?}");
        }
        assert_eq!(size_bytes("99999999999GiB"), Err(Invalid::TooLarge));
    }

    #[test]
    fn positive_decimals() {
        for text in ["0.5", "2", "1.25", "10", "0.01", "007"] {
            assert!(is_positive_decimal(text), "{text:?}");
        }
        for text in [
            "", "0", "0.0", "00", "-1", "+1", ".5", "5.", "1e3", "inf", "NaN", "1.2.3", " 1", "1,5",
        ] {
            assert!(!is_positive_decimal(text), "{text:?}");
        }
    }
}
