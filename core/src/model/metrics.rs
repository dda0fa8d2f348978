//! A scaling configuration's custom metric sources: what each instance's
//! agent reads on every pull (`[[metric]]` in its agent.toml), checked with
//! the agent's own rules and messages, so a bad source is refused by the
//! admin API instead of stopping every agent that would be launched with it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Invalid;
use crate::rules::Metric;
use crate::rules::alarm::MAX_CUSTOM_METRIC_LEN;

/// The agent reads every source on every pull; it refuses more than this.
pub const MAX_METRIC_SOURCES: usize = 100;
/// The agent's limit: a source slower than a minute is broken, not slow.
pub const MAX_METRIC_TIMEOUT_MS: u64 = 60_000;

/// One custom metric source: a name and exactly one of `prometheus`, `file`
/// and `command`. A source that fails is absent from that pull's sample,
/// never 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSource {
    /// The name alarms use (`metric = "queue_depth"`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
    /// A file holding one number; a relative path is taken from the folder
    /// of the agent's config (the instance's directory under the process
    /// provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A program and its arguments (no shell) printing one number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// None: the agent's default (2000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One series of a Prometheus text page (or the sum of those matching
/// `labels`); counters become per-second rates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSource {
    /// A plain `http://` URL, usually on the instance itself.
    pub url: String,
    pub metric: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Checks a configuration's sources, each problem under `metrics[i].key`.
pub fn check_metric_sources(sources: &[MetricSource], errors: &mut Invalid) {
    if sources.len() > MAX_METRIC_SOURCES {
        errors.push(
            "metrics",
            format!(
                "{} sources, at most {MAX_METRIC_SOURCES} are allowed",
                sources.len()
            ),
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, m) in sources.iter().enumerate() {
        let at = format!("metrics[{i}]");
        let name = m.name.as_str();
        let field = format!("{at}.name");
        if name.is_empty() {
            errors.push(field, "must not be empty");
        } else if name.len() > MAX_CUSTOM_METRIC_LEN {
            errors.push(
                field,
                format!("`{name}` is longer than {MAX_CUSTOM_METRIC_LEN} characters"),
            );
        } else if Metric::BUILT_IN.iter().any(|b| b.as_str() == name) {
            errors.push(
                field,
                format!("`{name}` is a built-in metric; give the custom one another name"),
            );
        } else if !Metric::is_custom_name(name) {
            errors.push(
                field,
                format!("`{name}` may use only letters, digits, '_', '.', ':' and '-'"),
            );
        } else if let Some(first) = names.get(name) {
            errors.push(
                field,
                format!("`{name}` is already metrics[{first}]'s name"),
            );
        } else {
            names.insert(name, i);
        }
        if let Some(t) = m.timeout_ms
            && !(1..=MAX_METRIC_TIMEOUT_MS).contains(&t)
        {
            errors.push(
                format!("{at}.timeout_ms"),
                format!("{t} is outside 1..={MAX_METRIC_TIMEOUT_MS}"),
            );
        }
        check_source(&at, m, errors);
    }
}

fn check_source(at: &str, m: &MetricSource, errors: &mut Invalid) {
    match (&m.prometheus, &m.file, &m.command) {
        (Some(p), None, None) => {
            if let Err(why) = check_http_url(&p.url) {
                errors.push(
                    format!("{at}.prometheus.url"),
                    format!("bad URL {:?}: {why}", p.url),
                );
            }
            if !is_prometheus_name(&p.metric, true) {
                errors.push(
                    format!("{at}.prometheus.metric"),
                    format!(
                        "{:?} is not a Prometheus metric name (letters, digits, '_' and ':', not starting with a digit)",
                        p.metric
                    ),
                );
            }
            for label in p.labels.keys().filter(|l| !is_prometheus_name(l, false)) {
                errors.push(
                    format!("{at}.prometheus.labels"),
                    format!(
                        "{label:?} is not a label name (letters, digits and '_', not starting with a digit)"
                    ),
                );
            }
        }
        (None, Some(path), None) => {
            if path.is_empty() {
                errors.push(format!("{at}.file"), "name the file that holds the number");
            }
        }
        (None, None, Some(argv)) => {
            if argv.first().is_none_or(String::is_empty) {
                errors.push(
                    format!("{at}.command"),
                    "name the program to run, e.g. [\"/usr/local/bin/queue-depth\"]",
                );
            }
        }
        _ => errors.push(at, "set exactly one of `prometheus`, `file` or `command`"),
    }
}

/// A Prometheus metric name (`colons` allowed) or label name.
fn is_prometheus_name(name: &str, colons: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    let mut chars = name.chars();
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

/// The URLs the agent scrapes: `http://host[:port][/path]`, with the
/// agent's reasons for refusing one.
fn check_http_url(url: &str) -> Result<(), String> {
    if url.chars().any(char::is_whitespace) {
        return Err("it contains whitespace".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected http://host[:port][/path]".into());
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err("https is not supported; use a plain http:// endpoint".into());
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("unsupported scheme {scheme:?}, expected http://"));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("missing ']' after the IPv6 address")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("expected ':port' after the IPv6 address")?,
            ),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    match port.map(str::parse::<u16>) {
        None | Some(Ok(1..)) => Ok(()),
        Some(_) => Err(format!(
            "bad port {:?}, expected 1-65535",
            port.unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, path: &str) -> MetricSource {
        MetricSource {
            name: name.into(),
            prometheus: None,
            file: Some(path.into()),
            command: None,
            timeout_ms: None,
        }
    }

    fn problems(sources: &[MetricSource]) -> Vec<String> {
        let mut errors = Invalid::default();
        check_metric_sources(sources, &mut errors);
        errors
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn good_sources_pass() {
        let prometheus = MetricSource {
            name: "http.ok_rps".into(),
            prometheus: Some(PrometheusSource {
                url: "http://[::1]:9100/metrics".into(),
                metric: "http_requests_total".into(),
                labels: [("code".to_owned(), "200".to_owned())].into(),
            }),
            file: None,
            command: None,
            timeout_ms: Some(500),
        };
        let command = MetricSource {
            name: "app:sessions".into(),
            file: None,
            command: Some(vec!["sh".into(), "-c".into(), "echo 42".into()]),
            ..file("x", "")
        };
        let all = [prometheus, file("queue_depth", "run/depth"), command];
        assert_eq!(problems(&all), Vec::<String>::new());
    }

    /// The agent's messages (agent/src/config.rs), under `metrics[i]`.
    #[test]
    fn every_problem_is_named_as_the_agent_names_it() {
        let long = "m".repeat(129);
        let sources = [
            file("queue depth", "/run/q"),
            MetricSource {
                name: "rps".into(),
                prometheus: Some(PrometheusSource {
                    url: "https://127.0.0.1/metrics".into(),
                    metric: "2xx-total".into(),
                    labels: [("code-class".to_owned(), "2xx".to_owned())].into(),
                }),
                ..file("", "")
            }
            .without_file(),
            MetricSource {
                command: Some(vec!["x".into()]),
                ..file("rps", "/run/a")
            },
            MetricSource {
                name: String::new(),
                file: None,
                command: Some(vec![]),
                timeout_ms: Some(0),
                prometheus: None,
            },
            MetricSource {
                timeout_ms: Some(60_001),
                ..file(&long, "")
            },
            MetricSource {
                command: Some(vec!["/usr/local/bin/cpu".into()]),
                ..file("CpuUtilization", "")
            }
            .without_file(),
            file("nothing", "").without_file(),
        ];
        let got = problems(&sources);
        for needle in [
            "metrics[0].name: `queue depth` may use only letters, digits, '_', '.', ':' and '-'",
            "metrics[1].prometheus.url: bad URL \"https://127.0.0.1/metrics\": https is not supported",
            "metrics[1].prometheus.metric: \"2xx-total\" is not a Prometheus metric name",
            "metrics[1].prometheus.labels: \"code-class\" is not a label name",
            "metrics[2].name: `rps` is already metrics[1]'s name",
            "metrics[2]: set exactly one of `prometheus`, `file` or `command`",
            "metrics[3].name: must not be empty",
            "metrics[3].timeout_ms: 0 is outside 1..=60000",
            "metrics[3].command: name the program to run",
            "metrics[4].name: `mmmm",
            "is longer than 128 characters",
            "metrics[4].file: name the file that holds the number",
            "metrics[4].timeout_ms: 60001 is outside 1..=60000",
            "metrics[5].name: `CpuUtilization` is a built-in metric",
            "metrics[6]: set exactly one of `prometheus`, `file` or `command`",
        ] {
            assert!(
                got.iter().any(|p| p.contains(needle)),
                "missing `{needle}` in:\n{got:#?}"
            );
        }
        assert_eq!(got.len(), 14, "{got:#?}");
    }

    #[test]
    fn at_most_a_hundred_sources() {
        let many: Vec<_> = (0..101)
            .map(|i| file(&format!("m{i}"), &format!("/run/m{i}")))
            .collect();
        assert_eq!(
            problems(&many),
            ["metrics: 101 sources, at most 100 are allowed"]
        );
    }

    #[test]
    fn urls_are_checked_as_the_agent_parses_them() {
        for (url, why) in [
            ("http://127.0.0.1:9100/metrics", None),
            ("http://localhost", None),
            ("http://[::1]/m?x=1#f", None),
            ("http://h:0/", Some("bad port \"0\"")),
            ("http://h:x/", Some("bad port \"x\"")),
            ("http:///m", Some("missing host")),
            ("http://u:p@h/", Some("credentials")),
            ("ftp://h/", Some("unsupported scheme \"ftp\"")),
            ("h:80/m", Some("expected http://")),
            ("http://h/ x", Some("whitespace")),
            ("http://[::1/", Some("missing ']'")),
            ("http://[zz]/", Some("not an IPv6 address")),
        ] {
            match (check_http_url(url), why) {
                (Ok(()), None) => {}
                (Err(e), Some(why)) => assert!(e.contains(why), "{url}: {e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }

    impl MetricSource {
        fn without_file(self) -> Self {
            Self { file: None, ..self }
        }
    }
}
