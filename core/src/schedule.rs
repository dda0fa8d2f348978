//! Scheduled tasks' time arithmetic, pure: recurrences (Daily, Weekly,
//! Monthly, Cron) in a time zone, the next run after an instant, and whether
//! a run is due, missed within its launch expiration, or expired.
//!
//! Times of day are wall-clock times in the task's time zone (UTC unless
//! named), taken from `launch_time`. Across DST: a wall time that does not
//! exist (spring forward) runs at the first instant after the gap, a wall
//! time that happens twice (fall back) runs once, at the first occurrence.
//! Days a month does not have are skipped (a Monthly 29-31 runs on the 28th
//! of no February); that is cron's rule too.

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::model::Invalid;

/// ESS: a run may start up to 1800 s late.
pub const MAX_LAUNCH_EXPIRATION_SECS: u32 = 1800;
/// ESS's default: ten minutes to get past a running activity or a restart.
pub const DEFAULT_LAUNCH_EXPIRATION_SECS: u32 = 600;
/// Missed occurrences walked over in one look (a minutely cron down for a
/// week is 10 080); past this the next look continues.
const MAX_SKIPPED: u32 = 20_000;
/// How far ahead a next run is looked for (a Feb 29 cron needs four years).
const SEARCH_DAYS: i64 = 366 * 8;

/// How a task repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Recurrence {
    /// Once, at `launch_time`.
    None,
    /// Every `every` days from the launch date.
    Daily { every: u32 },
    /// On these weekdays, 0 = Sunday.
    Weekly { days: Vec<u8> },
    /// On days `from`..=`to` of each month.
    Monthly { from: u8, to: u8 },
    /// A 5-field cron expression.
    Cron { expression: String },
}

impl Recurrence {
    /// A recurrence from its type and value as users write them (`Weekly`, `1,3`).
    pub fn parse(kind: &str, value: &str) -> Result<Recurrence, String> {
        let number = |s: &str, what: &str| -> Result<u32, String> {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{kind}: {what} `{s}` is not a whole number"))
        };
        match kind {
            "" | "None" => Ok(Recurrence::None),
            "Daily" => Ok(Recurrence::Daily {
                every: number(if value.is_empty() { "1" } else { value }, "the day count")?,
            }),
            "Weekly" => {
                let days = value
                    .split(',')
                    .map(|d| {
                        number(d, "the weekday").and_then(|d| {
                            u8::try_from(d).map_err(|_| format!("{d} is not a weekday"))
                        })
                    })
                    .collect::<Result<Vec<u8>, String>>()?;
                Ok(Recurrence::Weekly { days })
            }
            "Monthly" => {
                let (a, b) = value.split_once('-').unwrap_or((value, value));
                let day = |s: &str| {
                    number(s, "the day of the month")
                        .and_then(|d| u8::try_from(d).map_err(|_| format!("{d} is not a day")))
                };
                Ok(Recurrence::Monthly {
                    from: day(a)?,
                    to: day(b)?,
                })
            }
            "Cron" => {
                Cron::parse(value).map_err(|e| format!("cron `{value}`: {e}"))?;
                Ok(Recurrence::Cron {
                    expression: value.to_owned(),
                })
            }
            other => Err(format!(
                "unknown recurrence_type `{other}`; expected None, Daily, Weekly, Monthly or Cron"
            )),
        }
    }
}

/// When a scheduled task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The first run (RFC 3339).
    pub launch_time: Timestamp,
    pub recurrence: Recurrence,
    /// IANA name, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// No run after this instant.
    pub recurrence_end_time: Option<Timestamp>,
    /// A run blocked or missed is retried until this many seconds late.
    pub launch_expiration_secs: u32,
}

/// What a task should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Run now the occurrence scheduled at `at`; `skipped` earlier ones were
    /// missed (the controller was down) and are dropped.
    Run { at: Timestamp, skipped: u32 },
    /// The latest occurrence, at `at`, was missed beyond its expiration:
    /// record and drop it, and the `skipped` before it.
    Expired { at: Timestamp, skipped: u32 },
    /// Nothing to do until then.
    Wait(Timestamp),
    /// No occurrence remains.
    Finished,
}

impl Schedule {
    /// One line for an activity's details.
    pub fn describe(&self) -> String {
        format!(
            "{:?} from {} in {}, launch expiration {} s",
            self.recurrence, self.launch_time, self.time_zone, self.launch_expiration_secs
        )
    }

    /// Validates every field, naming each problem.
    pub fn validate(&self, errors: &mut Invalid) {
        let tz = TimeZone::get(&self.time_zone);
        if let Err(e) = &tz {
            errors.push(
                "time_zone",
                format!("unknown time zone `{}`: {e}", self.time_zone),
            );
        }
        if self.launch_expiration_secs > MAX_LAUNCH_EXPIRATION_SECS {
            errors.push(
                "launch_expiration_secs",
                format!(
                    "{} is outside 0..={MAX_LAUNCH_EXPIRATION_SECS}",
                    self.launch_expiration_secs
                ),
            );
        }
        if let Some(end) = self.recurrence_end_time {
            if end <= self.launch_time {
                errors.push("recurrence_end_time", "must be after launch_time");
            }
            if self.recurrence == Recurrence::None {
                errors.push("recurrence_end_time", "only applies to a recurring task");
            }
        }
        match &self.recurrence {
            Recurrence::None => {}
            Recurrence::Daily { every } => {
                if !(1..=31).contains(every) {
                    errors.push(
                        "recurrence.every",
                        format!("{every} is outside 1..=31 days"),
                    );
                }
            }
            Recurrence::Weekly { days } => {
                if days.is_empty() {
                    errors.push(
                        "recurrence.days",
                        "name at least one weekday (0 = Sunday .. 6)",
                    );
                }
                for (i, d) in days.iter().enumerate() {
                    if *d > 6 {
                        errors.push(
                            format!("recurrence.days[{i}]"),
                            format!("{d} is not a weekday (0 = Sunday .. 6)"),
                        );
                    }
                }
            }
            Recurrence::Monthly { from, to } => {
                if !(1..=31).contains(from) || !(1..=31).contains(to) || from > to {
                    errors.push(
                        "recurrence",
                        format!("day range {from}-{to} must be A-B with 1 ≤ A ≤ B ≤ 31"),
                    );
                }
            }
            Recurrence::Cron { expression } => {
                if let Err(e) = Cron::parse(expression) {
                    errors.push("recurrence.expression", e);
                }
            }
        }
    }

    fn zone(&self) -> TimeZone {
        TimeZone::get(&self.time_zone).unwrap_or(TimeZone::UTC)
    }

    /// The first occurrence strictly after `after`, if any.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let next = if self.launch_time > after {
            Some(self.launch_time)
        } else {
            match &self.recurrence {
                Recurrence::None => None,
                Recurrence::Cron { expression } => {
                    let cron = Cron::parse(expression).ok()?;
                    cron.next_after(after, &self.zone())
                }
                other => self.next_calendar(other, after),
            }
        };
        next.filter(|t| self.recurrence_end_time.is_none_or(|end| *t <= end))
    }

    /// Daily, Weekly, Monthly: the launch time's wall-clock time on each
    /// matching day.
    fn next_calendar(&self, rec: &Recurrence, after: Timestamp) -> Option<Timestamp> {
        let tz = self.zone();
        let launch = self.launch_time.to_zoned_datetime(tz.clone());
        let (launch_date, time) = (launch.date(), launch.time());
        let mut day = after.to_zoned_datetime(tz.clone()).date();
        for _ in 0..SEARCH_DAYS {
            if day >= launch_date && matches_day(rec, launch_date, day) {
                let at = wall_to_instant(&tz, day, time)?;
                if at > after {
                    return Some(at);
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// Decides what to do at `now`, given the occurrence last run or
    /// dropped (`last`, None before the first).
    pub fn due(&self, last: Option<Timestamp>, now: Timestamp) -> Due {
        // The earliest occurrence not yet handled.
        let from = last.unwrap_or_else(|| self.launch_time - 1.second());
        let Some(next) = self.next_after(from) else {
            return Due::Finished;
        };
        if next > now {
            return Due::Wait(next);
        }
        // After downtime only the latest missed occurrence matters.
        let (mut at, mut skipped) = (next, 0u32);
        while skipped < MAX_SKIPPED {
            match self.next_after(at) {
                Some(n) if n <= now => {
                    at = n;
                    skipped += 1;
                }
                _ => break,
            }
        }
        let late = now.duration_since(at).as_secs();
        if late <= i64::from(self.launch_expiration_secs) {
            Due::Run { at, skipped }
        } else {
            Due::Expired { at, skipped }
        }
    }
}

fn matches_day(rec: &Recurrence, launch: Date, day: Date) -> bool {
    match rec {
        Recurrence::None | Recurrence::Cron { .. } => false,
        Recurrence::Daily { every } => {
            let days = i64::from(launch.until(day).map(|s| s.get_days()).unwrap_or(0));
            days >= 0 && days % i64::from((*every).max(1)) == 0
        }
        Recurrence::Weekly { days } => {
            days.contains(&(day.weekday().to_sunday_zero_offset() as u8))
        }
        Recurrence::Monthly { from, to } => (*from..=*to).contains(&(day.day() as u8)),
    }
}

/// The instant a wall-clock time happens in `tz`: after a DST gap, the
/// first instant past it; in a DST fold, the first occurrence.
fn wall_to_instant(tz: &TimeZone, day: Date, time: Time) -> Option<Timestamp> {
    let dt = DateTime::from_parts(day, time);
    tz.to_ambiguous_timestamp(dt).compatible().ok()
}

/// A parsed 5-field cron expression: minute hour day-of-month month day-of-week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<u8>,
    hours: Vec<u8>,
    days: Vec<u8>,
    months: Vec<u8>,
    weekdays: Vec<u8>,
    /// Day-of-month and day-of-week both restricted: a day matching either runs (Vixie cron).
    either_day: bool,
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:?} {:?} {:?} {:?}",
            self.minutes, self.hours, self.days, self.months, self.weekdays
        )
    }
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    /// Parses `*`, numbers, names (JAN, MON), lists `a,b`, ranges `a-b` and
    /// steps `*/n`, `a-b/n`. Day-of-week 7 is Sunday too.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{expr}` has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day-of-month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTH_NAMES)?;
        let mut weekdays = field(fields[4], "day-of-week", 0, 7, &DAY_NAMES)?;
        if weekdays.contains(&7) {
            weekdays.retain(|d| *d != 7);
            if !weekdays.contains(&0) {
                weekdays.insert(0, 0);
            }
        }
        let either_day = fields[2] != "*" && fields[4] != "*";
        Ok(Self {
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if !self.months.contains(&(d.month() as u8)) {
            return false;
        }
        let dom = self.days.contains(&(d.day() as u8));
        let dow = self
            .weekdays
            .contains(&(d.weekday().to_sunday_zero_offset() as u8));
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first matching instant strictly after `after`, in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut day = after.to_zoned_datetime(tz.clone()).date();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(day) {
                let mut best: Option<Timestamp> = None;
                for h in &self.hours {
                    for m in &self.minutes {
                        let time = Time::new(*h as i8, *m as i8, 0, 0).ok()?;
                        if let Some(at) = wall_to_instant(tz, day, time)
                            && at > after
                            && best.is_none_or(|b| at < b)
                        {
                            best = Some(at);
                        }
                    }
                }
                if best.is_some() {
                    return best;
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

fn field(text: &str, name: &str, min: u8, max: u8, names: &[&str]) -> Result<Vec<u8>, String> {
    let value = |s: &str| -> Result<u8, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            // Months are 1-based, weekdays 0-based.
            return Ok(i as u8 + min.min(1) * u8::from(names.len() == 12));
        }
        let v: u8 = s
            .parse()
            .map_err(|_| format!("{name}: `{s}` is not a number"))?;
        if v < min || v > max {
            return Err(format!("{name}: {v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u8 = s
                    .parse()
                    .map_err(|_| format!("{name}: step `{s}` is not a number"))?;
                if step == 0 {
                    return Err(format!("{name}: a step must be at least 1"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{name}: range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        out.extend((lo..=hi).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(format!("{name}: `{text}` matches nothing"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn schedule(launch: &str, recurrence: Recurrence, tz: &str) -> Schedule {
        Schedule {
            launch_time: ts(launch),
            recurrence,
            time_zone: tz.into(),
            recurrence_end_time: None,
            launch_expiration_secs: DEFAULT_LAUNCH_EXPIRATION_SECS,
        }
    }

    fn runs(s: &Schedule, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = s.launch_time - 1.second();
        for _ in 0..n {
            match s.next_after(at) {
                Some(t) => {
                    out.push(t.to_string());
                    at = t;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn a_one_off_runs_once() {
        let s = schedule("2026-03-01T08:00:00Z", Recurrence::None, "UTC");
        assert_eq!(runs(&s, 3), ["2026-03-01T08:00:00Z"]);
    }

    #[test]
    fn daily_every_two_days_with_an_end() {
        let mut s = schedule(
            "2026-03-01T08:00:00Z",
            Recurrence::Daily { every: 2 },
            "UTC",
        );
        s.recurrence_end_time = Some(ts("2026-03-06T00:00:00Z"));
        assert_eq!(
            runs(&s, 10),
            [
                "2026-03-01T08:00:00Z",
                "2026-03-03T08:00:00Z",
                "2026-03-05T08:00:00Z"
            ]
        );
    }

    #[test]
    fn daily_keeps_wall_clock_time_across_dst_in_berlin() {
        // 09:00 Berlin is 08:00Z in winter and 07:00Z in summer; DST began 2026-03-29.
        let s = schedule(
            "2026-03-27T08:00:00Z",
            Recurrence::Daily { every: 1 },
            "Europe/Berlin",
        );
        assert_eq!(
            runs(&s, 4),
            [
                "2026-03-27T08:00:00Z",
                "2026-03-28T08:00:00Z",
                "2026-03-29T07:00:00Z",
                "2026-03-30T07:00:00Z"
            ]
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_runs_after_it_and_a_fold_runs_once() {
        // 02:30 Berlin does not exist on 2026-03-29: runs at 03:30 CEST = 01:30Z.
        let s = schedule(
            "2026-03-28T01:30:00Z",
            Recurrence::Daily { every: 1 },
            "Europe/Berlin",
        );
        assert_eq!(
            runs(&s, 3),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
        // 02:30 happens twice on 2026-10-25: once, at the first (CEST, 00:30Z).
        let s = schedule(
            "2026-10-24T00:30:00Z",
            Recurrence::Daily { every: 1 },
            "Europe/Berlin",
        );
        assert_eq!(
            runs(&s, 3),
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z"
            ]
        );
    }

    #[test]
    fn weekly_on_monday_and_friday() {
        // 2026-03-02 is a Monday.
        let s = schedule(
            "2026-03-02T18:00:00Z",
            Recurrence::Weekly { days: vec![1, 5] },
            "UTC",
        );
        assert_eq!(
            runs(&s, 4),
            [
                "2026-03-02T18:00:00Z",
                "2026-03-06T18:00:00Z",
                "2026-03-09T18:00:00Z",
                "2026-03-13T18:00:00Z"
            ]
        );
    }

    #[test]
    fn monthly_day_ranges_skip_days_a_month_lacks() {
        let s = schedule(
            "2026-01-30T12:00:00Z",
            Recurrence::Monthly { from: 30, to: 31 },
            "UTC",
        );
        assert_eq!(
            runs(&s, 5),
            [
                "2026-01-30T12:00:00Z",
                "2026-01-31T12:00:00Z",
                "2026-03-30T12:00:00Z",
                "2026-03-31T12:00:00Z",
                "2026-04-30T12:00:00Z"
            ]
        );
    }

    #[test]
    fn cron_expressions() {
        let s = schedule(
            "2026-03-01T00:00:00Z",
            Recurrence::Cron {
                expression: "*/15 9-10 * * MON-FRI".into(),
            },
            "UTC",
        );
        let r = runs(&s, 10);
        assert_eq!(
            r[0], "2026-03-01T00:00:00Z",
            "the launch time is the first run"
        );
        assert_eq!(
            &r[1..4],
            [
                "2026-03-02T09:00:00Z",
                "2026-03-02T09:15:00Z",
                "2026-03-02T09:30:00Z"
            ]
        );
        assert_eq!(r[8], "2026-03-02T10:45:00Z");
        assert_eq!(r[9], "2026-03-03T09:00:00Z");
        // Leap day: the next Feb 29 after 2026 is in 2028.
        let s = schedule(
            "2026-01-01T00:00:00Z",
            Recurrence::Cron {
                expression: "0 12 29 2 *".into(),
            },
            "UTC",
        );
        assert_eq!(runs(&s, 2)[1], "2028-02-29T12:00:00Z");
        // Day-of-month or day-of-week when both are restricted; 7 is Sunday.
        let c = Cron::parse("0 0 1 * 7").unwrap();
        let next = c
            .next_after(ts("2026-03-01T00:00:00Z"), &TimeZone::UTC)
            .unwrap();
        assert_eq!(next.to_string(), "2026-03-08T00:00:00Z");
    }

    #[test]
    fn cron_in_a_time_zone_across_the_fall_back() {
        // 01:30 New York happens twice on 2026-11-01: once, at 05:30Z (EDT).
        let c = Cron::parse("30 1 * * *").unwrap();
        let tz = TimeZone::get("America/New_York").unwrap();
        let first = c.next_after(ts("2026-10-31T12:00:00Z"), &tz).unwrap();
        let second = c.next_after(first, &tz).unwrap();
        let third = c.next_after(second, &tz).unwrap();
        assert_eq!(
            [first.to_string(), second.to_string(), third.to_string()],
            [
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
                "2026-11-03T06:30:00Z"
            ]
        );
    }

    #[test]
    fn bad_cron_strings_are_named() {
        for (expr, needle) in [
            ("* * * *", "has 4 fields"),
            ("60 * * * *", "minute: 60 is outside 0-59"),
            ("* 24 * * *", "hour: 24 is outside 0-23"),
            ("* * 0 * *", "day-of-month: 0 is outside 1-31"),
            ("* * * 13 *", "month: 13 is outside 1-12"),
            ("* * * * 8", "day-of-week: 8 is outside 0-7"),
            ("*/0 * * * *", "a step must be at least 1"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "`x` is not a number"),
        ] {
            let err = Cron::parse(expr).unwrap_err();
            assert!(err.contains(needle), "{expr}: {err}");
        }
        assert_eq!(Cron::parse("0 0 * JAN,dec SUN").unwrap().months, [1, 12]);
    }

    #[test]
    fn due_runs_within_the_expiration_and_drops_after_it() {
        let s = schedule(
            "2026-03-01T08:00:00Z",
            Recurrence::Daily { every: 1 },
            "UTC",
        );
        assert_eq!(
            s.due(None, ts("2026-03-01T07:59:00Z")),
            Due::Wait(ts("2026-03-01T08:00:00Z"))
        );
        assert_eq!(
            s.due(None, ts("2026-03-01T08:09:59Z")),
            Due::Run {
                at: ts("2026-03-01T08:00:00Z"),
                skipped: 0
            }
        );
        // The controller was down from 07:00 to 08:30: beyond the 600 s expiration.
        assert_eq!(
            s.due(None, ts("2026-03-01T08:30:00Z")),
            Due::Expired {
                at: ts("2026-03-01T08:00:00Z"),
                skipped: 0
            }
        );
        // Down for three days: only the latest occurrence counts; it runs if
        // still within its expiration, the two before it are dropped.
        assert_eq!(
            s.due(Some(ts("2026-03-01T08:00:00Z")), ts("2026-03-04T08:05:00Z")),
            Due::Run {
                at: ts("2026-03-04T08:00:00Z"),
                skipped: 2
            }
        );
        // After dropping it, the next day's occurrence is awaited.
        assert_eq!(
            s.due(Some(ts("2026-03-01T08:00:00Z")), ts("2026-03-01T08:30:00Z")),
            Due::Wait(ts("2026-03-02T08:00:00Z"))
        );
        let once = schedule("2026-03-01T08:00:00Z", Recurrence::None, "UTC");
        assert_eq!(
            once.due(Some(ts("2026-03-01T08:00:00Z")), ts("2026-03-09T00:00:00Z")),
            Due::Finished
        );
    }

    #[test]
    fn validation_names_every_field() {
        let mut s = schedule(
            "2026-03-01T08:00:00Z",
            Recurrence::Weekly { days: vec![1, 9] },
            "Mars/Olympus",
        );
        s.launch_expiration_secs = 1801;
        s.recurrence_end_time = Some(ts("2026-02-01T00:00:00Z"));
        let mut e = Invalid::default();
        s.validate(&mut e);
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "time_zone",
                "launch_expiration_secs",
                "recurrence_end_time",
                "recurrence.days[1]"
            ]
        );
        let mut e = Invalid::default();
        schedule(
            "2026-03-01T08:00:00Z",
            Recurrence::Monthly { from: 20, to: 3 },
            "UTC",
        )
        .validate(&mut e);
        assert!(e.to_string().contains("day range 20-3"), "{e}");
    }
}
