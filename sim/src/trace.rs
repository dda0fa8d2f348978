//! Load traces: demand in work units per second over Unix time, read from a
//! CSV (`unix_seconds,demand`) or a Prometheus `query_range` JSON export.
//! Demand between two points is the earlier point's (a step function).

use std::path::Path;

/// A trace: points sorted by time, at least one.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub points: Vec<(i64, f64)>,
}

impl Trace {
    pub fn start(&self) -> i64 {
        self.points[0].0
    }

    /// The last point's time plus the step before it, so the last point
    /// lasts as long as the one before it.
    pub fn end(&self) -> i64 {
        let n = self.points.len();
        let last = self.points[n - 1].0;
        let step = if n > 1 {
            last - self.points[n - 2].0
        } else {
            1
        };
        last + step.max(1)
    }

    /// A cursor that walks the trace forwards in time.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor { trace: self, i: 0 }
    }
}

/// Reads demand at non-decreasing times in O(1) amortised.
pub struct Cursor<'a> {
    trace: &'a Trace,
    i: usize,
}

impl Cursor<'_> {
    pub fn at(&mut self, t: i64) -> f64 {
        let p = &self.trace.points;
        while self.i + 1 < p.len() && p[self.i + 1].0 <= t {
            self.i += 1;
        }
        if t < p[self.i].0 { 0.0 } else { p[self.i].1 }
    }
}

/// Reads a trace file: JSON when it starts with `{`, else CSV.
pub fn load(path: &Path) -> Result<Trace, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    if text.trim_start().starts_with('{') {
        parse_prometheus(&name, &text)
    } else {
        parse_csv(&name, &text)
    }
}

/// `unix_seconds,demand` per line; a first line that is not numeric is a
/// header; blank lines and `#` comments are skipped. Errors name
/// `FILE:LINE:COLUMN`.
pub fn parse_csv(name: &str, text: &str) -> Result<Trace, String> {
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut cols = line.splitn(3, ',');
        let (t, d) = (cols.next().unwrap_or(""), cols.next());
        if points.is_empty() && n == first_content_line(text) && t.trim().parse::<f64>().is_err() {
            continue; // a header
        }
        let Some(d) = d else {
            return Err(format!(
                "{name}:{line_no}:{}: expected `unix_seconds,demand`, found no comma",
                line.len() + 1
            ));
        };
        if let Some(extra) = cols.next() {
            let col = line.len() - extra.len();
            return Err(format!(
                "{name}:{line_no}:{col}: expected two columns `unix_seconds,demand`, found a third"
            ));
        }
        let t: i64 = t.trim().parse().map_err(|_| {
            format!(
                "{name}:{line_no}:1: unix_seconds `{}` is not a whole number of seconds",
                t.trim()
            )
        })?;
        let col = line.find(',').map_or(1, |i| i + 2);
        let d: f64 = d
            .trim()
            .parse()
            .ok()
            .filter(|d: &f64| d.is_finite() && *d >= 0.0)
            .ok_or_else(|| {
                format!(
                    "{name}:{line_no}:{col}: demand `{}` is not a number at or above 0",
                    d.trim()
                )
            })?;
        if let Some(&(prev, _)) = points.last()
            && t <= prev
        {
            return Err(format!(
                "{name}:{line_no}:1: unix_seconds {t} is not after the previous line's {prev}; sort the trace"
            ));
        }
        points.push((t, d));
    }
    if points.is_empty() {
        return Err(format!("{name}: no data lines (`unix_seconds,demand`)"));
    }
    Ok(Trace { points })
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .unwrap_or(0)
}

/// A Prometheus `query_range` answer (`{"status":"success","data":{
/// "resultType":"matrix","result":[{"values":[[t,"v"],...]}]}}`), as
/// `curl .../api/v1/query_range` saves it. Several series are summed
/// point by point (the demand of every instance of a job).
pub fn parse_prometheus(name: &str, text: &str) -> Result<Trace, String> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("{name}:{}:{}: not JSON: {e}", e.line(), e.column()))?;
    if let Some(s) = v.get("status").and_then(|s| s.as_str())
        && s != "success"
    {
        return Err(format!(
            "{name}: the export's status is `{s}`, not `success`"
        ));
    }
    let data = v
        .get("data")
        .ok_or_else(|| format!("{name}: no `data` object (expected a query_range answer)"))?;
    match data.get("resultType").and_then(|t| t.as_str()) {
        Some("matrix") => {}
        other => {
            return Err(format!(
                "{name}: data.resultType is {}, expected `matrix` (export a query_range, not an instant query)",
                other.map_or("missing".to_owned(), |o| format!("`{o}`"))
            ));
        }
    }
    let result = data
        .get("result")
        .and_then(|r| r.as_array())
        .ok_or_else(|| format!("{name}: data.result is not a list"))?;
    let mut sum = std::collections::BTreeMap::<i64, f64>::new();
    for (i, series) in result.iter().enumerate() {
        let values = series
            .get("values")
            .and_then(|v| v.as_array())
            .ok_or_else(|| format!("{name}: data.result[{i}].values is not a list"))?;
        for (j, pair) in values.iter().enumerate() {
            let at = format!("{name}: data.result[{i}].values[{j}]");
            let (t, d) = match pair.as_array().map(Vec::as_slice) {
                Some([t, d]) => (t, d),
                _ => return Err(format!("{at}: expected [unix_seconds, \"value\"]")),
            };
            let t = t
                .as_f64()
                .ok_or_else(|| format!("{at}[0]: the time is not a number"))?;
            let d: f64 = d
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| d.as_f64())
                .ok_or_else(|| format!("{at}[1]: the value is not a number in a string"))?;
            if !d.is_finite() || d < 0.0 {
                return Err(format!("{at}[1]: demand {d} is not a number at or above 0"));
            }
            *sum.entry(t.floor() as i64).or_default() += d;
        }
    }
    if sum.is_empty() {
        return Err(format!("{name}: the export holds no samples"));
    }
    Ok(Trace {
        points: sum.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_comments_and_steps() {
        let t = parse_csv("t.csv", "unix_seconds,demand\n# note\n100,5\n\n160,7.5\n").unwrap();
        assert_eq!(t.points, vec![(100, 5.0), (160, 7.5)]);
        assert_eq!(t.end(), 220);
        let mut c = t.cursor();
        assert_eq!(c.at(99), 0.0);
        assert_eq!(c.at(100), 5.0);
        assert_eq!(c.at(159), 5.0);
        assert_eq!(c.at(160), 7.5);
        assert_eq!(c.at(500), 7.5);
    }

    #[test]
    fn csv_errors_name_file_line_and_column() {
        let cases = [
            (
                "100,5\n160,x\n",
                "t.csv:2:5: demand `x` is not a number at or above 0",
            ),
            (
                "100,5\n1.5,3\n",
                "t.csv:2:1: unix_seconds `1.5` is not a whole number",
            ),
            (
                "100,5\n90,3\n",
                "t.csv:2:1: unix_seconds 90 is not after the previous line's 100",
            ),
            (
                "100,5\n160\n",
                "t.csv:2:4: expected `unix_seconds,demand`, found no comma",
            ),
            ("100,5,1\n", "t.csv:1:6: expected two columns"),
            (
                "100,-1\n",
                "t.csv:1:5: demand `-1` is not a number at or above 0",
            ),
            ("unix_seconds,demand\n", "t.csv: no data lines"),
        ];
        for (text, want) in cases {
            let err = parse_csv("t.csv", text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn prometheus_matrix_series_are_summed() {
        let json = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"instance":"a"},"values":[[1700000000,"10"],[1700000015,"12.5"]]},
            {"metric":{"instance":"b"},"values":[[1700000000,"1"],[1700000015.0,"2"]]}]}}"#;
        let t = parse_prometheus("p.json", json).unwrap();
        assert_eq!(t.points, vec![(1_700_000_000, 11.0), (1_700_000_015, 14.5)]);
    }

    #[test]
    fn prometheus_errors_say_what_is_wrong() {
        let cases = [
            (
                "{\"status\":\"error\"}",
                "p.json: the export's status is `error`",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "p.json: data.resultType is `vector`, expected `matrix`",
            ),
            (
                r#"{"data":{"resultType":"matrix","result":[{"values":[[1,"x"]]}]}}"#,
                "p.json: data.result[0].values[0][1]: the value is not a number",
            ),
            (
                r#"{"data":{"resultType":"matrix","result":[{"values":[[1]]}]}}"#,
                "p.json: data.result[0].values[0]: expected [unix_seconds, \"value\"]",
            ),
            ("{\"data\": [1,\n", "p.json:2:0: not JSON"),
            (
                r#"{"data":{"resultType":"matrix","result":[]}}"#,
                "p.json: the export holds no samples",
            ),
        ];
        for (text, want) in cases {
            let err = parse_prometheus("p.json", text).unwrap_err();
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }
}
