//! Cron-style schedules, in UTC: `min hour day-of-month month day-of-week`, or with a
//! leading seconds field (six fields). Each field is `*`, a number, a range `a-b`, a list
//! `a,b`, and any of these with a step `/n`. As in cron, when both day fields are
//! restricted a day matching either is a match.

use std::fmt;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Both day fields restricted: either matching is enough (cron's rule).
    either_day: bool,
}

/// Why a schedule's text is not one.
#[derive(Debug, PartialEq, Eq)]
pub struct BadSchedule(String);

impl fmt::Display for BadSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadSchedule {}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Schedule {
    type Err = BadSchedule;

    fn from_str(text: &str) -> Result<Self, BadSchedule> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(BadSchedule(format!(
                    "the schedule `{text}` has {n} fields: a schedule is `minute hour \
                     day-of-month month day-of-week` (five fields, as in cron), or six with \
                     seconds first; for example `*/15 * * * *`"
                )));
            }
        };
        let field = |value: &str, name: &str, low: u32, high: u32| {
            parse_field(value, low, high).map_err(|why| {
                BadSchedule(format!(
                    "the schedule `{text}`: its {name} field `{value}` {why} ({name} runs \
                     {low}-{high})"
                ))
            })
        };
        // Sunday is 0 or 7.
        let mut days_of_week = field(rest[4], "day-of-week", 0, 7)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        Ok(Self {
            text: text.to_owned(),
            seconds: field(seconds, "seconds", 0, 59)?,
            minutes: field(rest[0], "minute", 0, 59)?,
            hours: field(rest[1], "hour", 0, 23)?,
            days_of_month: field(rest[2], "day-of-month", 1, 31)?,
            months: field(rest[3], "month", 1, 12)?,
            days_of_week,
            either_day: rest[2] != "*" && rest[4] != "*",
        })
    }
}

fn parse_field(value: &str, low: u32, high: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in value.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("has a step `{step}` that is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let number = |n: &str| {
            n.parse::<u32>()
                .ok()
                .filter(|n| (low..=high).contains(n))
                .ok_or_else(|| format!("has `{n}`, not a number in range"))
        };
        let (from, to) = if range == "*" {
            (low, high)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("has a range `{range}` that runs backwards"));
            }
            (a, b)
        } else {
            let n = number(range)?;
            // `5/15`: from 5 to the end, every 15.
            (n, if step > 1 { high } else { n })
        };
        let mut n = from;
        while n <= to {
            bits |= 1 << n;
            n += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    /// The first time (Unix seconds, UTC) strictly after `after` that the schedule names;
    /// `None` when it names none within about five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let mut t = after + 1;
        let limit = after + 5 * 366 * 86_400;
        while t <= limit {
            let day = t / 86_400;
            let (_, month, day_of_month) = civil_from_days(day as i64);
            let day_of_week = ((day + 4) % 7) as u32; // 1970-01-01 was a Thursday.
            if !has(self.months, month) || !self.day_matches(day_of_month, day_of_week) {
                t = (day + 1) * 86_400;
                continue;
            }
            let second_of_day = t % 86_400;
            let (hour, minute, second) = (
                (second_of_day / 3600) as u32,
                (second_of_day / 60 % 60) as u32,
                (second_of_day % 60) as u32,
            );
            if !has(self.hours, hour) {
                t = t - second_of_day % 3600 + 3600;
                continue;
            }
            if !has(self.minutes, minute) {
                t = t - u64::from(second) + 60;
                continue;
            }
            if !has(self.seconds, second) {
                t += 1;
                continue;
            }
            return Some(t);
        }
        None
    }

    fn day_matches(&self, day_of_month: u32, day_of_week: u32) -> bool {
        let by_month = has(self.days_of_month, day_of_month);
        let by_week = has(self.days_of_week, day_of_week);
        if self.either_day {
            by_month || by_week
        } else {
            by_month && by_week
        }
    }
}

fn has(bits: u64, n: u32) -> bool {
    bits & (1 << n) != 0
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01 (Howard Hinnant's
/// algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-12-03 10:44:25Z` for Unix milliseconds.
pub(crate) fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-03 10:44:25 UTC, a Thursday.
    const NOW: u64 = 1_796_294_665;

    fn next(schedule: &str, after: u64) -> String {
        let s: Schedule = schedule.parse().unwrap();
        format_utc(s.next_after(after).unwrap() as i64 * 1000)
    }

    #[test]
    fn utc_dates_are_the_calendars() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(NOW as i64 * 1000), "2026-12-03 10:44:25Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn schedules_name_the_next_time_they_fire() {
        assert_eq!(next("*/15 * * * *", NOW), "2026-12-03 10:45:00Z");
        assert_eq!(next("0 * * * *", NOW), "2026-12-03 11:00:00Z");
        assert_eq!(next("30 2 * * *", NOW), "2026-12-04 02:30:00Z");
        assert_eq!(next("0 9 * * 1-5", NOW), "2026-12-04 09:00:00Z");
        // Saturday and Sunday (7 is Sunday too).
        assert_eq!(next("0 9 * * 6,7", NOW), "2026-12-05 09:00:00Z");
        assert_eq!(next("0 0 1 * *", NOW), "2027-01-01 00:00:00Z");
        assert_eq!(next("0 0 29 2 *", NOW), "2028-02-29 00:00:00Z");
        // Both day fields: either is enough, as in cron (the 15th, or a Monday).
        assert_eq!(next("0 0 15 * 1", NOW), "2026-12-07 00:00:00Z");
        // Seconds first.
        assert_eq!(next("*/10 * * * * *", NOW), "2026-12-03 10:44:30Z");
        assert_eq!(next("5/20 * * * *", NOW), "2026-12-03 10:45:00Z");
        assert_eq!(next("5/20 * * * *", NOW + 60), "2026-12-03 11:05:00Z");
        // Strictly after.
        assert_eq!(next("* * * * * *", NOW), "2026-12-03 10:44:26Z");
    }

    #[test]
    fn a_schedule_that_never_fires_says_so() {
        let never: Schedule = "0 0 31 2 *".parse().unwrap();
        assert_eq!(never.next_after(NOW), None);
    }

    #[test]
    fn bad_schedules_name_the_field_and_the_form() {
        for (text, says) in [
            ("* * * *", "has 4 fields"),
            ("61 * * * *", "minute field `61`"),
            ("* * * 0 *", "month field `0`"),
            ("*/0 * * * *", "step `0`"),
            ("5-1 * * * *", "runs backwards"),
            ("* * * * mon", "day-of-week field `mon`"),
        ] {
            let e = text.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(text), "{text}: {e}");
        }
    }
}
