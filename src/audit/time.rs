//! Wall-clock milliseconds as RFC 3339 text, without a date library: the caller passes the
//! time in, and the civil-date conversion is a few lines of integer arithmetic.

/// Formats Unix milliseconds as UTC RFC 3339 with milliseconds.
///
/// Times after year 9999 print with a longer year, which RFC 3339 cannot express; a real
/// clock never gets there.
///
/// # Examples
///
/// ```
/// use ssm_session::audit::rfc3339_ms;
///
/// assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
/// assert_eq!(rfc3339_ms(1_795_879_840_123), "2026-11-28T15:30:40.123Z");
/// ```
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (year, month, day) = civil_date(seconds / 86_400);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        unix_ms % 1000
    )
}

/// Year, month and day of the proleptic Gregorian calendar, `days` after 1970-01-01 (the
/// same conversion SigV4 timestamps use).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let (year, month, day) = crate::sigv4::civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    (year as u64, month as u64, day as u64)
}
