//! Predictive scaling: a forecast of a group's load from its per-minute
//! history, and the capacity floor that forecast asks for.
//!
//! **Load**, not the metric: a minute's load is the metric's group average
//! times the instances in service that minute, so a forecast made while the
//! group had 3 instances still holds when it has 8 (a CPU average halves
//! when the group doubles; the load does not).
//!
//! **Method: seasonal-naive averages.** History is cut into 5-minute
//! buckets. With at least 7 days of it, each coming bucket is forecast as
//! the mean of the same 5 minutes of the week in the weeks held (the newer
//! week weighs double), which carries weekday/weekend differences; a slot of
//! the week without data (a gap) falls back to the daily profile. With less
//! than 7 days, each bucket is the mean of the same 5 minutes of the day over
//! the days held, newer days weighing more (×0.7 per day of age). A slot
//! with no data on any day is interpolated between its neighbours. Fewer
//! than 24 h of minutes with data is refused: a daily profile needs a day.
//!
//! Why not Holt-Winters: with at most 14 days kept (two weekly seasons)
//! its smoothing parameters cannot be fitted honestly, and a badly fitted
//! trend term over-forecasts a 48 h horizon; seasonal-naive averages need
//! no fitting, are deterministic and explainable bucket by bucket. The
//! limits this leaves: no trend (a load growing week on week is
//! under-forecast by the growth), and a one-off (a holiday, a launch) is
//! replayed a day or a week later. Predictive scaling only raises a floor,
//! so the group's target tracking and step rules cover both.

use serde::{Deserialize, Serialize};

/// A bucket of the forecast: 5 minutes.
pub const BUCKET_MS: i64 = 5 * 60_000;
/// The forecast covers the next 48 h (ESS and AWS forecast two days).
pub const HORIZON_MS: i64 = 48 * 3_600_000;
/// History older than 14 days is not read (and not kept: the rollups' retention).
pub const HISTORY_MS: i64 = 14 * DAY_MS;
/// Below a day of minutes with data there is no daily profile to repeat.
pub const MIN_HISTORY_MINUTES: usize = 1_440;
/// A week of history (by span) turns on the weekly profile.
pub const WEEKLY_MIN_SPAN_MS: i64 = 7 * DAY_MS;
/// Each day of age weighs 0.7 of the day after it in the daily profile, so
/// the last two days carry about half the weight: recent enough to follow a
/// shift, long enough to average out one noisy day.
pub const DAILY_DECAY: f64 = 0.7;
/// The newer week weighs double the older in the weekly profile.
pub const WEEKLY_DECAY: f64 = 0.5;

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
const DAY_SLOTS: usize = (DAY_MS / BUCKET_MS) as usize;
const WEEK_SLOTS: usize = (WEEK_MS / BUCKET_MS) as usize;

/// One minute of a group's load: the metric's group average times the
/// instances in service that minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// The minute's start, Unix milliseconds.
    pub minute_ms: i64,
    pub load: f64,
}

/// One finished minute of a group's metrics, as the store keeps it
/// (`ROLLUP_RETENTION_MS`): each metric's group average, max and count of
/// samples, and the instances in service that minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteRollup {
    pub group_id: String,
    /// The minute's start, Unix milliseconds.
    pub minute_ms: i64,
    /// Instances in service during the minute (the most seen at once).
    pub in_service: u32,
    /// By metric name.
    pub metrics: Vec<MetricRollup>,
}

/// One metric's minute: over every sample of every in-service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRollup {
    pub metric: String,
    pub average: f64,
    pub max: f64,
    pub count: u32,
}

/// Rollups are kept 14 days: two weekly seasons for the forecast.
pub const ROLLUP_RETENTION_MS: i64 = HISTORY_MS;

impl MinuteRollup {
    /// The minute's load of `metric`: its average times the instances in
    /// service. `None` when the metric was not sampled that minute.
    pub fn load(&self, metric: &crate::rules::Metric) -> Option<LoadPoint> {
        let m = self.metrics.iter().find(|m| m.metric == metric.as_str())?;
        (m.count > 0).then(|| LoadPoint {
            minute_ms: self.minute_ms,
            load: m.average * f64::from(self.in_service.max(1)),
        })
    }

    /// The store's id for the group's minute.
    pub fn id(&self) -> String {
        format!("{}@{}", self.group_id, self.minute_ms)
    }
}

/// Which profile a forecast came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// Same 5 minutes of the day, averaged over the days held.
    Daily,
    /// Same 5 minutes of the week, averaged over the weeks held.
    Weekly,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Daily => "daily seasonal-naive",
            Method::Weekly => "weekly seasonal-naive",
        })
    }
}

/// The next 48 h of load, one value per 5-minute bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The first bucket's start (the bucket holding `now`), Unix ms.
    pub start_ms: i64,
    pub load: Vec<f64>,
    pub method: Method,
    /// Minutes of history with data the forecast was made from.
    pub history_minutes: usize,
}

/// Why no forecast was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoForecast {
    /// Fewer than `MIN_HISTORY_MINUTES` minutes with data in the last 14 days.
    TooLittleHistory { minutes: usize },
}

impl std::fmt::Display for NoForecast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoForecast::TooLittleHistory { minutes } => write!(
                f,
                "too little history to forecast: {minutes} minutes of the group's metric \
                 recorded, a forecast needs {MIN_HISTORY_MINUTES} (24 h)"
            ),
        }
    }
}

/// The next 48 h of load from the history before `now_ms` (see the module
/// doc for the method). Points outside the last 14 days, at or after
/// `now_ms`, or not finite are ignored; the order of `history` does not
/// matter.
pub fn forecast(history: &[LoadPoint], now_ms: i64) -> Result<Forecast, NoForecast> {
    let from = now_ms - HISTORY_MS;
    let mut minutes = std::collections::BTreeMap::new();
    for p in history {
        if p.minute_ms >= from && p.minute_ms < now_ms && p.load.is_finite() && p.load >= 0.0 {
            minutes.insert(p.minute_ms.div_euclid(60_000), p.load);
        }
    }
    if minutes.len() < MIN_HISTORY_MINUTES {
        return Err(NoForecast::TooLittleHistory {
            minutes: minutes.len(),
        });
    }
    // Mean load per 5-minute bucket, keyed by the bucket's absolute index.
    let mut buckets: std::collections::BTreeMap<i64, (f64, u32)> = Default::default();
    for (minute, load) in &minutes {
        let b = (minute * 60_000).div_euclid(BUCKET_MS);
        let e = buckets.entry(b).or_insert((0.0, 0));
        e.0 += load;
        e.1 += 1;
    }
    let now_bucket = now_ms.div_euclid(BUCKET_MS);
    let first_ms = minutes.keys().next().map_or(now_ms, |m| m * 60_000);

    let daily = profile(&buckets, now_bucket, DAY_SLOTS, DAILY_DECAY);
    let daily = fill_circular(daily);
    let weekly = (now_ms - first_ms >= WEEKLY_MIN_SPAN_MS)
        .then(|| profile(&buckets, now_bucket, WEEK_SLOTS, WEEKLY_DECAY));

    let n = (HORIZON_MS / BUCKET_MS) as usize;
    let load = (0..n as i64)
        .map(|i| {
            let b = now_bucket + i;
            let day_value = daily[slot(b, DAY_SLOTS)];
            match &weekly {
                Some(w) => w[slot(b, WEEK_SLOTS)].unwrap_or(day_value),
                None => day_value,
            }
        })
        .collect();
    Ok(Forecast {
        start_ms: now_bucket * BUCKET_MS,
        load,
        method: if weekly.is_some() {
            Method::Weekly
        } else {
            Method::Daily
        },
        history_minutes: minutes.len(),
    })
}

fn slot(bucket: i64, slots: usize) -> usize {
    bucket.rem_euclid(slots as i64) as usize
}

/// A weighted mean per slot of the season; a bucket `k` whole seasons old
/// weighs `decay^k`. `None` where no bucket fell in the slot.
fn profile(
    buckets: &std::collections::BTreeMap<i64, (f64, u32)>,
    now_bucket: i64,
    slots: usize,
    decay: f64,
) -> Vec<Option<f64>> {
    let mut sum = vec![0.0; slots];
    let mut weight = vec![0.0; slots];
    for (&b, &(total, count)) in buckets {
        let age = (now_bucket - b).max(0) / slots as i64;
        let w = decay.powi(age as i32);
        let s = slot(b, slots);
        sum[s] += w * total / f64::from(count);
        weight[s] += w;
    }
    sum.iter()
        .zip(&weight)
        .map(|(s, w)| (*w > 0.0).then(|| s / w))
        .collect()
}

/// Fills each empty slot by linear interpolation between the nearest filled
/// slots on either side, wrapping around the season. At least one slot is
/// filled (the caller has a day of minutes).
fn fill_circular(p: Vec<Option<f64>>) -> Vec<f64> {
    let n = p.len();
    let filled: Vec<usize> = (0..n).filter(|&i| p[i].is_some()).collect();
    if filled.is_empty() {
        return vec![0.0; n];
    }
    (0..n)
        .map(|i| {
            if let Some(v) = p[i] {
                return v;
            }
            let next = filled
                .iter()
                .copied()
                .find(|&j| j > i)
                .unwrap_or(filled[0] + n);
            let prev = filled
                .iter()
                .rev()
                .copied()
                .find(|&j| j < i)
                .map_or(filled[filled.len() - 1] as i64 - n as i64, |j| j as i64);
            let (a, b) = (p[prev.rem_euclid(n as i64) as usize], p[next % n]);
            let (a, b) = (a.unwrap_or(0.0), b.unwrap_or(0.0));
            let t = (i as i64 - prev) as f64 / (next as i64 - prev) as f64;
            a + (b - a) * t
        })
        .collect()
}

impl Forecast {
    /// The forecast load of the bucket holding `at_ms`; `None` outside the horizon.
    pub fn load_at(&self, at_ms: i64) -> Option<f64> {
        let i = (at_ms - self.start_ms).div_euclid(BUCKET_MS);
        usize::try_from(i)
            .ok()
            .and_then(|i| self.load.get(i).copied())
    }

    /// The highest forecast load from `now_ms` to `now_ms + lead_secs`: what
    /// must be in service by then, so the floor rises `lead_secs` before a
    /// forecast rise and falls only once the forecast at `now_ms` has fallen.
    pub fn peak_ahead(&self, now_ms: i64, lead_secs: u32) -> Option<f64> {
        let end = now_ms + i64::from(lead_secs) * 1000;
        let mut at = now_ms;
        let mut peak: Option<f64> = None;
        while at <= end {
            if let Some(l) = self.load_at(at) {
                peak = Some(peak.map_or(l, |p: f64| p.max(l)));
            }
            at += BUCKET_MS;
        }
        if let Some(l) = self.load_at(end) {
            peak = Some(peak.map_or(l, |p: f64| p.max(l)));
        }
        peak
    }
}

/// Instances needed to carry `load` with the metric at `target_value` on each.
pub fn capacity_for_load(load: f64, target_value: f64) -> u32 {
    if !(load.is_finite() && target_value > 0.0) || load <= 0.0 {
        return 0;
    }
    let c = (load / target_value - 1e-9).ceil();
    if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

string_enum!(
    /// Whether a predictive rule acts on its forecast (ESS's PredictiveScalingMode).
    PredictiveMode {
        ForecastOnly = "ForecastOnly",
        ForecastAndScale = "ForecastAndScale",
    }
);

impl Default for PredictiveMode {
    /// ESS and AWS: a new predictive rule only forecasts until told to act.
    fn default() -> Self {
        PredictiveMode::ForecastOnly
    }
}

string_enum!(
    /// What the group's max does to a forecast above it (ESS's PredictiveValueBehavior).
    PredictiveValueBehavior {
        MaxOverridePredictiveValue = "MaxOverridePredictiveValue",
        PredictiveValueOverrideMax = "PredictiveValueOverrideMax",
        PredictiveValueOverrideMaxWithBuffer = "PredictiveValueOverrideMaxWithBuffer",
    }
);

impl Default for PredictiveValueBehavior {
    /// ESS: the group's max caps the forecast unless told otherwise.
    fn default() -> Self {
        PredictiveValueBehavior::MaxOverridePredictiveValue
    }
}

/// The floor a forecast capacity sets, and the max it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floor {
    /// The forecast capacity before any bound.
    pub forecast_capacity: u32,
    /// What the group is held at or above.
    pub floor: u32,
    /// The group's max while the floor holds: its own, or raised by the
    /// forecast under `PredictiveValueOverrideMax*`.
    pub max_size: u32,
}

/// The floor for `forecast_capacity` within the group's `min_size..=max_size`
/// under `behavior`: `MaxOverridePredictiveValue` caps it at the max;
/// `PredictiveValueOverrideMax` raises the max to the forecast;
/// `...WithBuffer` raises it to the forecast plus `buffer_pct` percent
/// (rounded up), as ESS does, so target tracking has headroom above it.
pub fn floor_for(
    forecast_capacity: u32,
    min_size: u32,
    max_size: u32,
    behavior: PredictiveValueBehavior,
    buffer_pct: u32,
) -> Floor {
    let max = match behavior {
        PredictiveValueBehavior::MaxOverridePredictiveValue => max_size,
        PredictiveValueBehavior::PredictiveValueOverrideMax => max_size.max(forecast_capacity),
        PredictiveValueBehavior::PredictiveValueOverrideMaxWithBuffer => {
            let buffered = u64::from(forecast_capacity) * (100 + u64::from(buffer_pct));
            let buffered = u32::try_from(buffered.div_ceil(100)).unwrap_or(u32::MAX);
            if forecast_capacity > max_size {
                max_size.max(buffered)
            } else {
                max_size
            }
        }
    };
    Floor {
        forecast_capacity,
        floor: forecast_capacity.clamp(min_size.min(max), max),
        max_size: max,
    }
}

/// What a predictive rule's forecast asks of its group at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// The highest forecast load from now to now + the lead time.
    pub peak_load: f64,
    pub lead_secs: u32,
    pub floor: Floor,
}

/// The floor `kind` (a predictive rule) sets on a group bounded by
/// `min_size..=max_size` at `now_ms`: the capacity for the highest load
/// forecast over the lead time, under the rule's max-capacity behaviour.
/// `None` for another kind of rule or past the forecast's horizon.
pub fn ask(
    kind: &crate::rules::RuleKind,
    min_size: u32,
    max_size: u32,
    forecast: &Forecast,
    now_ms: i64,
) -> Option<Ask> {
    let crate::rules::RuleKind::Predictive {
        target_value,
        predictive_value_behavior,
        predictive_value_buffer,
        ..
    } = kind
    else {
        return None;
    };
    let lead_secs = kind.predictive_lead_secs()?;
    let peak_load = forecast.peak_ahead(now_ms, lead_secs)?;
    let floor = floor_for(
        capacity_for_load(peak_load, *target_value),
        min_size,
        max_size,
        *predictive_value_behavior,
        predictive_value_buffer.unwrap_or(0),
    );
    Some(Ask {
        peak_load,
        lead_secs,
        floor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00Z, a Thursday

    fn sine_day(minute_of_day: f64) -> f64 {
        // 100 at 06:00's trough rising to 300 at 18:00.
        200.0 - 100.0 * (2.0 * std::f64::consts::PI * minute_of_day / 1440.0).cos()
    }

    fn history(days: i64, f: impl Fn(i64) -> f64) -> Vec<LoadPoint> {
        (0..days * 1440)
            .map(|m| LoadPoint {
                minute_ms: T0 + m * 60_000,
                load: f(m),
            })
            .collect()
    }

    fn max_rel_error(fc: &Forecast, truth: impl Fn(i64) -> f64) -> f64 {
        fc.load
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mid = fc.start_ms + i as i64 * BUCKET_MS + BUCKET_MS / 2;
                let t = truth((mid - T0) / 60_000);
                (v - t).abs() / t
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_clean_daily_sine_is_forecast_within_two_percent() {
        let h = history(3, |m| sine_day((m % 1440) as f64));
        let now = T0 + 3 * DAY_MS;
        let fc = forecast(&h, now).unwrap();
        assert_eq!(fc.method, Method::Daily);
        assert_eq!(fc.load.len(), 576);
        assert_eq!(fc.start_ms, now);
        let err = max_rel_error(&fc, |m| sine_day((m % 1440) as f64));
        assert!(err < 0.02, "max relative error {err}");
    }

    #[test]
    fn fourteen_days_of_a_weekly_pattern_forecast_the_weekend() {
        // Weekdays peak at 300, the weekend (days 2 and 3 from a Thursday) at 120.
        let truth = |m: i64| {
            let day = (m / 1440) % 7;
            let scale = if day == 2 || day == 3 { 0.4 } else { 1.0 };
            scale * sine_day((m % 1440) as f64)
        };
        let h = history(14, truth);
        // Forecast from Friday 00:00 (day 15): Friday and Saturday.
        let now = T0 + 15 * DAY_MS;
        let h: Vec<_> = h
            .into_iter()
            .chain(history(15, truth).into_iter().skip(14 * 1440))
            .collect();
        let fc = forecast(&h, now).unwrap();
        assert_eq!(fc.method, Method::Weekly);
        let err = max_rel_error(&fc, truth);
        assert!(err < 0.02, "max relative error {err}");
        // A daily-only forecast would put Saturday's peak near Friday's.
        let sat_peak = fc.load[288..].iter().copied().fold(0.0, f64::max);
        assert!(sat_peak < 130.0, "Saturday's forecast peak {sat_peak}");
    }

    #[test]
    fn gaps_in_history_are_bridged() {
        // Three days, with 02:00–05:00 missing on every day and all of day 2's afternoon.
        let h: Vec<_> = history(3, |m| sine_day((m % 1440) as f64))
            .into_iter()
            .filter(|p| {
                let m = (p.minute_ms - T0) / 60_000;
                let mod_day = m % 1440;
                !(120..300).contains(&mod_day) && !(1440 + 720..1440 + 1080).contains(&m)
            })
            .collect();
        let fc = forecast(&h, T0 + 3 * DAY_MS).unwrap();
        let err = max_rel_error(&fc, |m| sine_day((m % 1440) as f64));
        assert!(err < 0.05, "max relative error {err}");
    }

    #[test]
    fn less_than_a_day_of_history_is_refused_with_the_reason() {
        let h = history(1, |_| 100.0);
        let short = &h[..1439];
        let e = forecast(short, T0 + DAY_MS).unwrap_err();
        assert_eq!(e, NoForecast::TooLittleHistory { minutes: 1439 });
        assert!(e.to_string().contains("1439 minutes"), "{e}");
        assert!(e.to_string().contains("needs 1440 (24 h)"), "{e}");
        // History older than 14 days does not count.
        let old = forecast(&h, T0 + 15 * DAY_MS).unwrap_err();
        assert_eq!(old, NoForecast::TooLittleHistory { minutes: 0 });
        assert!(forecast(&h, T0 + DAY_MS).is_ok());
    }

    #[test]
    fn the_forecast_is_deterministic_and_order_free() {
        let h = history(2, |m| sine_day((m % 1440) as f64) + (m % 7) as f64);
        let mut reversed = h.clone();
        reversed.reverse();
        let now = T0 + 2 * DAY_MS + 17 * 60_000;
        assert_eq!(
            forecast(&h, now).unwrap(),
            forecast(&reversed, now).unwrap()
        );
    }

    #[test]
    fn the_floor_looks_ahead_by_the_lead_time() {
        let fc = Forecast {
            start_ms: T0,
            load: vec![100.0, 100.0, 100.0, 400.0, 400.0, 100.0],
            method: Method::Daily,
            history_minutes: 1440,
        };
        assert_eq!(fc.peak_ahead(T0, 0), Some(100.0));
        // 10 minutes ahead of the rise at +15 min: not yet.
        assert_eq!(fc.peak_ahead(T0, 600), Some(100.0));
        // 15 minutes ahead: it is in the window.
        assert_eq!(fc.peak_ahead(T0, 900), Some(400.0));
        assert_eq!(fc.peak_ahead(T0 + 20 * 60_000, 300), Some(400.0));
        assert_eq!(fc.peak_ahead(T0 + 25 * 60_000, 0), Some(100.0));
        assert_eq!(fc.peak_ahead(T0 + 60 * 60_000, 0), None);
    }

    #[test]
    fn capacity_and_the_max_behaviours() {
        assert_eq!(capacity_for_load(350.0, 50.0), 7);
        assert_eq!(capacity_for_load(351.0, 50.0), 8);
        assert_eq!(capacity_for_load(0.0, 50.0), 0);
        use PredictiveValueBehavior::*;
        let f = |c, b, buf| floor_for(c, 1, 10, b, buf);
        assert_eq!(
            f(14, MaxOverridePredictiveValue, 0),
            Floor {
                forecast_capacity: 14,
                floor: 10,
                max_size: 10
            }
        );
        assert_eq!(f(14, PredictiveValueOverrideMax, 0).floor, 14);
        assert_eq!(f(14, PredictiveValueOverrideMax, 0).max_size, 14);
        let b = f(14, PredictiveValueOverrideMaxWithBuffer, 10);
        assert_eq!((b.floor, b.max_size), (14, 16));
        // Under the max, nothing moves; the min still holds.
        assert_eq!(f(6, PredictiveValueOverrideMaxWithBuffer, 10).max_size, 10);
        assert_eq!(f(0, MaxOverridePredictiveValue, 0).floor, 1);
    }
}
