//! Value parsers for flags: the domain's names as possible values, and
//! the checked shapes (periods, cooldowns, times, `KEY=VALUE`, steps and
//! recurrences).

use clap::builder::PossibleValuesParser;
use ebb_core::model::{
    ActivityStatus, HealthCheckType, LifecycleState, MAX_COOLDOWN_SECS, RemovalPolicy,
};
use ebb_core::rules::{
    AdjustmentType, AlarmState, Comparison, MissingData, Statistic, StepAdjustment,
};
use ebb_core::schedule;

pub fn removal_policies() -> PossibleValuesParser {
    PossibleValuesParser::new(RemovalPolicy::ALL.iter().map(|p| p.as_str()))
}

pub fn health_check_types() -> PossibleValuesParser {
    PossibleValuesParser::new(HealthCheckType::ALL.iter().map(|t| t.as_str()))
}

pub fn lifecycle_states() -> PossibleValuesParser {
    PossibleValuesParser::new(LifecycleState::ALL.iter().map(|s| s.as_str()))
}

pub fn activity_statuses() -> PossibleValuesParser {
    PossibleValuesParser::new(ActivityStatus::ALL.iter().map(|s| s.as_str()))
}

/// The processes `group suspend` and `group resume` take.
pub const PROCESSES: &[&str] = &[
    "ScaleIn",
    "ScaleOut",
    "HealthCheck",
    "AlarmNotification",
    "ScheduledAction",
];

pub fn processes() -> PossibleValuesParser {
    PossibleValuesParser::new(PROCESSES)
}

pub fn adjustment_types() -> PossibleValuesParser {
    PossibleValuesParser::new(AdjustmentType::ALL.iter().map(|t| t.as_str()))
}

pub fn statistics() -> PossibleValuesParser {
    PossibleValuesParser::new(Statistic::ALL.iter().map(|s| s.as_str()))
}

/// Hidden from the generated help and completions, which the flag's own
/// help lists instead: clap_complete writes `>` and `<` into fish's
/// completion unescaped, and fish reads them as redirections.
pub fn comparisons() -> PossibleValuesParser {
    PossibleValuesParser::new(
        Comparison::ALL
            .iter()
            .map(|c| clap::builder::PossibleValue::new(c.as_str()).hide(true)),
    )
}

pub fn missing_data_modes() -> PossibleValuesParser {
    PossibleValuesParser::new(MissingData::ALL.iter().map(|m| m.as_str()))
}

pub fn alarm_states() -> PossibleValuesParser {
    PossibleValuesParser::new(AlarmState::ALL.iter().map(|s| s.as_str()))
}

pub fn period(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    let periods = ebb_core::rules::alarm::PERIODS_SECS;
    if !periods.contains(&v) {
        let list: Vec<String> = periods.iter().map(u32::to_string).collect();
        return Err(format!("must be one of {} seconds", list.join(", ")));
    }
    Ok(v)
}

/// An RFC 3339 instant, kept as given (the server parses it too).
pub fn rfc3339(s: &str) -> Result<String, String> {
    s.parse::<jiff::Timestamp>()
        .map(|_| s.to_owned())
        .map_err(|e| format!("expected an RFC 3339 time such as 2025-01-06T08:00:00+01:00: {e}"))
}

/// An RFC 3339 instant as Unix milliseconds.
pub fn rfc3339_ms(s: &str) -> Result<i64, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("expected an RFC 3339 time such as 2025-01-06T08:00:00Z: {e}"))
}

pub fn cooldown(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if v > MAX_COOLDOWN_SECS {
        return Err(format!("must be 0 to {MAX_COOLDOWN_SECS} seconds"));
    }
    Ok(v)
}

/// `KEY=VALUE`, for `--env` and `--tag`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// One `--step` flag: a step, or (bare `--step`) only the choice of a step rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepArg(pub Option<StepAdjustment>);

/// `LOWER:UPPER:ADJ`, an empty bound being unbounded: `0:10:1`, `10::3`.
pub fn parse_step_arg(s: &str) -> Result<StepArg, String> {
    if s.is_empty() {
        return Ok(StepArg(None));
    }
    let parts: Vec<&str> = s.split(':').collect();
    let [lower, upper, adjustment] = parts[..] else {
        return Err(format!(
            "expected LOWER:UPPER:ADJ such as 0:10:1 or 10::3, got `{s}`"
        ));
    };
    let bound = |b: &str, which: &str| -> Result<Option<f64>, String> {
        let b = b.trim();
        if b.is_empty() {
            return Ok(None);
        }
        match b.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(format!("{which} bound `{b}` is not a number")),
        }
    };
    let adjustment = adjustment
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("adjustment `{adjustment}` is not a whole number"))?;
    Ok(StepArg(Some(StepAdjustment {
        lower_bound: bound(lower, "lower")?,
        upper_bound: bound(upper, "upper")?,
        adjustment,
    })))
}

/// A recurrence as the API carries it: `recurrence_type` and `recurrence_value`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recurrence {
    pub recurrence_type: String,
    pub recurrence_value: String,
}

/// `once`, `daily:N`, `weekly:1,5`, `monthly:A-B` or `cron:m h dom mon dow`.
pub fn parse_recurrence(s: &str) -> Result<Recurrence, String> {
    let (kind, value) = s.split_once(':').unwrap_or((s, ""));
    let recurrence_type = match kind.trim().to_ascii_lowercase().as_str() {
        "once" | "none" => "None",
        "daily" => "Daily",
        "weekly" => "Weekly",
        "monthly" => "Monthly",
        "cron" => "Cron",
        other => {
            return Err(format!(
                "unknown recurrence `{other}`; expected once, daily:N, weekly:1,5, monthly:A-B or cron:\"m h dom mon dow\""
            ));
        }
    };
    let r = Recurrence {
        recurrence_type: recurrence_type.to_owned(),
        recurrence_value: value.trim().to_owned(),
    };
    to_schedule_recurrence(&r.recurrence_type, &r.recurrence_value)?;
    Ok(r)
}

/// The domain's recurrence, for validation; the value's shape is checked here.
pub fn to_schedule_recurrence(kind: &str, value: &str) -> Result<schedule::Recurrence, String> {
    schedule::Recurrence::parse(kind, value)
}

/// A join token's lifetime: `90s`, `30m`, `1h`, `2d` or plain seconds,
/// from 1 s to 7 days.
pub fn ttl_secs(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use e.g. 90s, 30m, 1h or 2d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    let secs = n.saturating_mul(scale);
    if !(1..=7 * 86_400).contains(&secs) {
        return Err(format!("`{s}` is outside 1s..=7d"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_with_open_bounds() {
        assert_eq!(
            parse_step_arg("0:10:1").unwrap().0,
            Some(StepAdjustment {
                lower_bound: Some(0.0),
                upper_bound: Some(10.0),
                adjustment: 1
            })
        );
        assert_eq!(
            parse_step_arg("10::3").unwrap().0,
            Some(StepAdjustment {
                lower_bound: Some(10.0),
                upper_bound: None,
                adjustment: 3
            })
        );
        assert_eq!(
            parse_step_arg(":-10:-2").unwrap().0.unwrap().upper_bound,
            Some(-10.0)
        );
        assert_eq!(parse_step_arg("").unwrap().0, None);
        for bad in ["1:2", "a:1:1", "0:1:1.5", "0:1:1:1"] {
            assert!(parse_step_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn recurrences_parse_to_type_and_value() {
        let r = |s: &str| parse_recurrence(s).map(|r| (r.recurrence_type, r.recurrence_value));
        assert_eq!(r("daily:1").unwrap(), ("Daily".into(), "1".into()));
        assert_eq!(r("weekly:1,5").unwrap(), ("Weekly".into(), "1,5".into()));
        assert_eq!(r("monthly:1-7").unwrap(), ("Monthly".into(), "1-7".into()));
        assert_eq!(
            r("cron:0 8 * * 1-5").unwrap(),
            ("Cron".into(), "0 8 * * 1-5".into())
        );
        assert_eq!(r("once").unwrap(), ("None".into(), "".into()));
        assert!(r("hourly:1").is_err());
        assert!(r("weekly:mon").is_err());
        assert!(r("cron:0 8 *").is_err());
    }

    #[test]
    fn token_ttls_take_a_unit_and_stay_within_a_week() {
        assert_eq!(ttl_secs("90"), Ok(90));
        assert_eq!(ttl_secs("30m"), Ok(1_800));
        assert_eq!(ttl_secs("1h"), Ok(3_600));
        assert_eq!(ttl_secs("7d"), Ok(604_800));
        for (bad, says) in [
            ("0", "outside"),
            ("0s", "outside"),
            ("8d", "outside"),
            ("1w", "unit"),
            ("soon", "not a duration"),
            ("", "not a duration"),
        ] {
            let err = ttl_secs(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
