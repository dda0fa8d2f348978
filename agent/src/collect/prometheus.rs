//! The Prometheus text exposition format (version 0.0.4): finding one
//! metric's value in a scrape, and turning a counter into a per-second rate.
//!
//! Only the lines of the wanted metric are parsed in full; a line of another
//! metric is skipped by its name alone, so an exporter's odd line elsewhere
//! (or a form this parser does not know, such as a quoted UTF-8 metric name)
//! cannot break the metric a user asked for.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Instant;

/// A series' labels, `(name, value)`, as written.
type Labels = Vec<(String, String)>;

/// Which series to read: a metric name and label matchers that all must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub metric: String,
    /// `label = value` pairs; as in PromQL, a matcher with an empty value
    /// also matches series without that label.
    pub labels: BTreeMap<String, String>,
}

impl fmt::Display for Query {
    /// `name{label="value",...}`, as PromQL writes a selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            write!(f, "{{{}}}", labels.join(","))?;
        }
        Ok(())
    }
}

/// The value of a query in one scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    /// The sum over every matching series.
    pub value: f64,
    /// Whether the value only ever grows (a counter, or a histogram's or
    /// summary's `_count`/`_sum`/`_bucket`), so that its rate is what matters.
    pub cumulative: bool,
}

/// Finds `query` in a scrape's text. No matching series, or a malformed line
/// of the wanted metric, is an error naming what was wrong.
pub fn find(text: &str, query: &Query) -> Result<Found, String> {
    let families = families_of(&query.metric);
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut sum = 0.0;
    let mut matched = 0usize;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_matches([' ', '\t', '\r']);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
                && families.contains(&name)
            {
                types.insert(name, kind);
            }
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        if line[..name_end] != query.metric {
            continue;
        }
        let (labels, value) =
            parse_sample(&line[name_end..]).map_err(|why| format!("line {}: {why}", index + 1))?;
        let matches = query.labels.iter().all(|(name, wanted)| {
            let value = labels
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str());
            value == wanted
        });
        if matches {
            sum += value;
            matched += 1;
        }
    }
    if matched == 0 {
        return Err(format!("no series `{query}`"));
    }
    Ok(Found {
        value: sum,
        cumulative: is_cumulative(&query.metric, &types),
    })
}

/// Suffixes a sample's name adds to its family's, and the family types for
/// which the sample only grows.
const CUMULATIVE_SUFFIXES: &[(&str, &[&str])] = &[
    ("_total", &["counter"]),
    ("_count", &["histogram", "summary"]),
    ("_sum", &["histogram", "summary"]),
    ("_bucket", &["histogram"]),
];

/// The names a `# TYPE` line may give for `metric`'s family: the name
/// itself, and the name without a suffix from [`CUMULATIVE_SUFFIXES`].
fn families_of(metric: &str) -> Vec<&str> {
    let mut names = vec![metric];
    names.extend(
        CUMULATIVE_SUFFIXES
            .iter()
            .filter_map(|(suffix, _)| metric.strip_suffix(suffix)),
    );
    names
}

/// A declared `# TYPE` decides; with none, the `_total` naming convention does.
fn is_cumulative(metric: &str, types: &HashMap<&str, &str>) -> bool {
    if let Some(kind) = types.get(metric) {
        return *kind == "counter";
    }
    for (suffix, kinds) in CUMULATIVE_SUFFIXES {
        if let Some(kind) = metric.strip_suffix(suffix).and_then(|f| types.get(f)) {
            return kinds.contains(kind);
        }
    }
    metric.ends_with("_total")
}

/// Parses what follows a sample's name: `{labels}` (optional), the value,
/// and an optional timestamp (which is ignored: the agent times its reads).
fn parse_sample(rest: &str) -> Result<(Labels, f64), String> {
    let rest = rest.trim_start();
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => parse_labels(inside)?,
        None => (Vec::new(), rest),
    };
    let mut tokens = rest.split_whitespace();
    let value_text = tokens.next().ok_or("no value")?;
    let value = value_text
        .parse::<f64>()
        .map_err(|_| format!("{value_text:?} is not a value"))?;
    // An exemplar (`# {...} ...`, OpenMetrics) may follow; it is not ours.
    let mut after = tokens.take_while(|t| !t.starts_with('#'));
    if let Some(timestamp) = after.next()
        && timestamp.parse::<f64>().is_err()
    {
        return Err(format!("{timestamp:?} is not a timestamp"));
    }
    if let Some(extra) = after.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    Ok((labels, value))
}

/// Parses `name="value",...}` (the `{` already taken); returns the labels
/// and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "expected a label name at {:?}",
                s.chars().take(20).collect::<String>()
            ));
        }
        s = s[name_end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label `{name}`"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' to open label `{name}`'s value"))?;
        let (value, rest) =
            parse_quoted(s).ok_or_else(|| format!("label `{name}`'s value is not closed"))?;
        labels.push((name.to_owned(), value));
        s = rest.trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label `{name}`"));
        }
    }
}

/// Reads a label value up to its closing quote (the opening one already
/// taken), undoing the format's escapes: `\\`, `\"` and `\n`.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                // `\\` and `\"`; any other escaped character stands for itself.
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// Successive readings of a cumulative value, as a per-second rate.
#[derive(Debug, Default)]
pub(crate) struct Rate {
    last: Option<(f64, Instant)>,
}

/// What a reading of a cumulative value gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// Units per second since the previous reading.
    Rate(f64),
    /// The first reading: nothing to compare with yet.
    First,
    /// The value went down (the workload restarted): the next reading gives a rate.
    Reset,
}

impl Rate {
    /// Records `value` read at `at`, giving the rate since the previous reading.
    pub(crate) fn update(&mut self, value: f64, at: Instant) -> Step {
        let Some((previous, then)) = self.last.replace((value, at)) else {
            return Step::First;
        };
        if value < previous {
            return Step::Reset;
        }
        let seconds = at.saturating_duration_since(then).as_secs_f64();
        if seconds > 0.0 {
            Step::Rate((value - previous) / seconds)
        } else {
            // Two readings at one instant span no time; start again from this one.
            Step::First
        }
    }

    /// Forgets the previous reading (the value is no longer cumulative).
    pub(crate) fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn query(metric: &str, labels: &[(&str, &str)]) -> Query {
        Query {
            metric: metric.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const NODE: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
http_requests_total{code="200",method="get"} 73

# A comment that says nothing.
# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
odd_labels{a="x,y=\"z\"}",b="}"} 7
spaced { a = "1" , b="2", } 8
# TYPE queue_depth gauge
queue_depth 12.5
queue_depth_total 3
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} NaN
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE request_size_bytes histogram
request_size_bytes_bucket{le="+Inf"} 144320
request_size_bytes_count 144320
something_total 5
temperature{room="a"} -Inf
temperature{room="b"} +Inf
metric_without_timestamp_and_labels 12.47
{"utf8.metric.name", label="x"} 1
broken{ 1
"#;

    #[test]
    fn finds_values() {
        // (metric, label matchers, value, cumulative)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], f64, bool);
        let cases: &[Case] = &[
            // Several series match: their sum.
            ("http_requests_total", &[], 1103.0, true),
            ("http_requests_total", &[("code", "200")], 1100.0, true),
            (
                "http_requests_total",
                &[("code", "200"), ("method", "post")],
                1027.0,
                true,
            ),
            ("http_requests_total", &[("code", "400")], 3.0, true),
            (
                "msdos_file_access_time_seconds",
                &[("path", r"C:\DIR\FILE.TXT")],
                1.458255915e9,
                false,
            ),
            (
                "msdos_file_access_time_seconds",
                &[("error", "Cannot find file:\n\"FILE.TXT\"")],
                1.458255915e9,
                false,
            ),
            ("odd_labels", &[("a", "x,y=\"z\"}"), ("b", "}")], 7.0, false),
            ("spaced", &[("a", "1"), ("b", "2")], 8.0, false),
            ("queue_depth", &[], 12.5, false),
            // Declared gauge, and `_total` of a gauge family is not a counter's.
            ("queue_depth_total", &[], 3.0, false),
            ("rpc_duration_seconds_count", &[], 2693.0, true),
            ("rpc_duration_seconds_sum", &[], 1.7560473e7, true),
            (
                "request_size_bytes_bucket",
                &[("le", "+Inf")],
                144320.0,
                true,
            ),
            ("request_size_bytes_count", &[], 144320.0, true),
            // No TYPE: the name says counter.
            ("something_total", &[], 5.0, true),
            ("metric_without_timestamp_and_labels", &[], 12.47, false),
            // An empty matcher matches series without the label.
            ("queue_depth", &[("instance", "")], 12.5, false),
        ];
        for (metric, labels, value, cumulative) in cases {
            let q = query(metric, labels);
            assert_eq!(
                find(NODE, &q),
                Ok(Found {
                    value: *value,
                    cumulative: *cumulative
                }),
                "{q}"
            );
        }
    }

    #[test]
    fn non_finite_values_are_read_as_they_are() {
        let nan = find(NODE, &query("rpc_duration_seconds", &[("quantile", "0.5")])).unwrap();
        assert!(nan.value.is_nan());
        let minus = find(NODE, &query("temperature", &[("room", "a")])).unwrap();
        assert_eq!(minus.value, f64::NEG_INFINITY);
        let plus = find(NODE, &query("temperature", &[("room", "b")])).unwrap();
        assert_eq!(plus.value, f64::INFINITY);
    }

    #[test]
    fn missing_series_are_errors_that_name_the_selector() {
        let cases = [
            (query("nope", &[]), "no series `nope`"),
            (
                query("http_requests_total", &[("code", "500")]),
                "no series `http_requests_total{code=\"500\"}`",
            ),
            // A prefix of a name is not the name.
            (query("http_requests", &[]), "no series `http_requests`"),
            (
                query("queue_depth", &[("instance", "x")]),
                "no series `queue_depth{instance=\"x\"}`",
            ),
        ];
        for (q, expected) in cases {
            assert_eq!(find(NODE, &q), Err(expected.to_owned()));
        }
    }

    #[test]
    fn malformed_lines_of_the_wanted_metric_are_errors() {
        let cases = [
            ("broken{ 1\n", "line 1: expected a label name at \"1\""),
            (
                "m{a=\"1\" 2\n",
                "line 1: expected ',' or '}' after label `a`",
            ),
            ("m{a=\"1}\n", "line 1: label `a`'s value is not closed"),
            ("m{a 1}\n", "line 1: expected '=' after label `a`"),
            (
                "m{a=1} 2\n",
                "line 1: expected '\"' to open label `a`'s value",
            ),
            ("# ok\nm\n", "line 2: no value"),
            ("m one\n", "line 1: \"one\" is not a value"),
            ("m 1 soon\n", "line 1: \"soon\" is not a timestamp"),
            ("m 1 2 3\n", "line 1: unexpected \"3\" after the timestamp"),
        ];
        for (text, expected) in cases {
            let metric = if text.starts_with("broken") {
                "broken"
            } else {
                "m"
            };
            assert_eq!(
                find(text, &query(metric, &[])),
                Err(expected.to_owned()),
                "{text}"
            );
        }
        // Another metric's malformed line does not matter.
        assert_eq!(
            find("x{ 1\nm 4\n", &query("m", &[])).map(|f| f.value),
            Ok(4.0)
        );
    }

    #[test]
    fn timestamps_exemplars_and_crlf_are_accepted() {
        let text = "# TYPE m counter\r\nm_total{a=\"1\"} 5 1700000000000\r\nm_total{a=\"2\"} 6 # {trace_id=\"x\"} 1 1.5\r\n";
        assert_eq!(
            find(text, &query("m_total", &[])),
            Ok(Found {
                value: 11.0,
                cumulative: true
            })
        );
    }

    #[test]
    fn query_display_reads_like_promql() {
        assert_eq!(query("up", &[]).to_string(), "up");
        assert_eq!(
            query("x", &[("b", "2"), ("a", "say \"hi\"")]).to_string(),
            "x{a=\"say \\\"hi\\\"\",b=\"2\"}"
        );
    }

    #[test]
    fn rates_need_two_readings_and_skip_resets() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut rate = Rate::default();
        assert_eq!(rate.update(100.0, at(0)), Step::First);
        assert_eq!(rate.update(150.0, at(5)), Step::Rate(10.0));
        assert_eq!(rate.update(150.0, at(10)), Step::Rate(0.0));
        // The workload restarted and its counter began again.
        assert_eq!(rate.update(20.0, at(15)), Step::Reset);
        assert_eq!(rate.update(40.0, at(25)), Step::Rate(2.0));
        assert_eq!(rate.update(40.0, at(25)), Step::First);
        rate.clear();
        assert_eq!(rate.update(50.0, at(30)), Step::First);
    }
}
