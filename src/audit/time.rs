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

/// Year, month and day of the proleptic Gregorian calendar, `days` after 1970-01-01.
///
/// Counts in 400-year eras of years starting on March 1st, so that the leap day is the last
/// day of a year and March to January repeat a 153-days-per-five-months pattern.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01; 719_468 days separate it from 1970-01-01.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}
