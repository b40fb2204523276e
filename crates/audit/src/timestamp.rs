//! UTC timestamps as RFC 3339 text with milliseconds (`2024-02-29T23:59:59.999Z`), from
//! [`SystemTime`] with the standard library alone. It never consults a time zone database and
//! never panics, whatever the clock says.
//!
//! Why not `chrono`/`time`/`jiff`: the audit log needs exactly one format, in UTC, and the only
//! non-trivial part is turning a day count into a calendar date, which is a dozen lines of
//! integer arithmetic (proleptic Gregorian calendar, 400-year eras) checked day by day by the
//! tests below. Leap seconds do not exist in Unix time, so there is nothing else to handle.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds from the epoch to 9999-12-31T23:59:59Z, the last instant RFC 3339's four-digit
/// year can express.
const LAST_SECOND: u64 = 253_402_300_799;

const SECONDS_PER_DAY: u64 = 86_400;

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`, always 24 characters.
///
/// A clock before 1970 is written as the epoch and one after year 9999 as its last
/// millisecond: an audit line must always carry a well-formed time, and either case means the
/// clock is wrong, which the reader sees at once. Milliseconds are truncated, not rounded, so a
/// time never moves into the next second.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = match since_epoch.as_secs() {
        s if s > LAST_SECOND => (LAST_SECOND, 999),
        s => (s, since_epoch.subsec_millis()),
    };
    let (year, month, day) = civil_date(secs / SECONDS_PER_DAY);
    let of_day = secs % SECONDS_PER_DAY;
    let mut text = String::with_capacity(24);
    // Writing to a String cannot fail; the result is ignored rather than unwrapped.
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
    );
    text
}

/// The (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01.
///
/// Counting from 0000-03-01 puts the leap day at the end of each year, so months have a fixed
/// pattern (153 days per five months from March) and a year's length only matters at its end.
/// Eras of 400 years (146 097 days) repeat exactly.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // 719 468 days from 0000-03-01 to 1970-01-01.
    let from_march_0000 = days + 719_468;
    let era = from_march_0000 / 146_097;
    let day_of_era = from_march_0000 % 146_097;
    // Remove the leap days before this day within the era, then divide by a common year.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let (month, year_shift) = if month_from_march < 10 {
        (month_from_march + 3, 0)
    } else {
        (month_from_march - 9, 1)
    };
    (era * 400 + year_of_era + year_shift, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, millis: u64) -> String {
        rfc3339_millis(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
    }

    #[test]
    fn known_instants_are_formatted_exactly() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(1_709_251_200, 0), "2024-03-01T00:00:00.000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(1_234_567_890, 123), "2009-02-13T23:31:30.123Z");
        assert_eq!(at(LAST_SECOND, 999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn milliseconds_are_truncated_not_rounded() {
        let t = UNIX_EPOCH + Duration::new(59, 999_999_999);
        assert_eq!(rfc3339_millis(t), "1970-01-01T00:00:59.999Z");
    }

    #[test]
    fn clocks_outside_the_rfc3339_range_are_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::from_secs(LAST_SECOND + 3600);
        assert_eq!(rfc3339_millis(after), "9999-12-31T23:59:59.999Z");
    }

    /// Walks every day from 1970 to 2400 with a naive calendar (month lengths and the leap
    /// rule) and checks the arithmetic agrees with it on each one.
    #[test]
    fn every_day_until_2400_follows_the_gregorian_calendar() {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let month_len = |y: u64, m: u64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1970, 1, 1);
        let mut days = 0;
        while y < 2400 {
            assert_eq!(civil_date(days), (y, m, d), "day {days}");
            days += 1;
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
