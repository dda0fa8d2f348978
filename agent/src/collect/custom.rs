//! Custom metric sources (`[[metric]]` in agent.toml): a Prometheus
//! endpoint, a file holding a number, or a command printing one.
//!
//! Every source is read on every pull, all at once, each bounded by its
//! time-out. A source that fails is left out of that pull's sample, never
//! sent as 0: an alarm must see "no data", not a real zero. A failure is
//! logged once when it starts and once when it ends, as the collectors do.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::prometheus::{self, Query, Rate, Step};
use super::{FailureLog, Transition};
use crate::describe::{describe, describe_exit, timed_out};

/// Whole-scrape limit: node_exporter's page is a few hundred KB; anything
/// past this is not a metrics page the agent should hold in memory.
const MAX_SCRAPE_BYTES: usize = 16 * 1024 * 1024;
/// A file or a command's output holds one number; 4 KB leaves room for
/// whitespace and a mistake worth quoting.
const MAX_NUMBER_TEXT: usize = 4 * 1024;
/// How much of a command's stderr is kept for its failure message.
const MAX_STDERR: usize = 4 * 1024;
/// Ask for the classic text format: OpenMetrics and protobuf are not parsed.
const PROMETHEUS_ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
/// Quoted output is cut to this many characters in a message.
const MAX_QUOTED: usize = 60;

/// One `[[metric]]`: the name the sample carries and where its value comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSource {
    pub name: String,
    pub source: Source,
    pub timeout: Duration,
}

/// Where a custom metric's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A series of a Prometheus text page; counters become per-second rates.
    Prometheus { url: String, query: Query },
    /// A file holding one number.
    File { path: PathBuf },
    /// A program (no shell) printing one number; non-zero exit is a failure.
    Command { argv: Vec<String> },
}

/// One pull's custom metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomReading {
    /// `(name, value)` of each source that gave a finite value, in config order.
    pub values: Vec<(String, f64)>,
    /// `(name, why)` of each source that failed this time.
    pub errors: Vec<(String, String)>,
}

struct Slot {
    metric: MetricSource,
    rate: Rate,
    log: FailureLog,
}

/// The configured sources and what they remember between pulls (a
/// counter's previous reading, whether a source is failing).
pub struct CustomMetrics {
    slots: Vec<Slot>,
}

/// The I/O of one read; metrics that need the same one (several series of
/// one page) share it.
#[derive(Debug, Clone, PartialEq)]
enum Fetch {
    Http(String),
    File(PathBuf),
    Command(Vec<String>),
}

impl CustomMetrics {
    pub fn new(metrics: Vec<MetricSource>) -> Self {
        let slots = metrics
            .into_iter()
            .map(|metric| Slot {
                metric,
                rate: Rate::default(),
                log: FailureLog::default(),
            })
            .collect();
        CustomMetrics { slots }
    }

    /// Reads every source at once. Each gets its own time-out, and at most
    /// `budget`, so that a slow source cannot make the sample late. `now` is
    /// the pull's monotonic instant, which counters' rates are taken over.
    pub async fn read(&mut self, now: Instant, budget: Duration) -> CustomReading {
        let mut fetches: Vec<(Fetch, Duration)> = Vec::new();
        let fetch_of: Vec<usize> = self
            .slots
            .iter()
            .map(|slot| {
                let key = (
                    Fetch::of(&slot.metric.source),
                    slot.metric.timeout.min(budget),
                );
                fetches.iter().position(|f| *f == key).unwrap_or_else(|| {
                    fetches.push(key);
                    fetches.len() - 1
                })
            })
            .collect();

        let mut tasks = JoinSet::new();
        for (index, (fetch, timeout)) in fetches.iter().cloned().enumerate() {
            tasks.spawn(async move { (index, fetch.run(timeout).await) });
        }
        let mut texts: Vec<Option<Result<String, String>>> = vec![None; fetches.len()];
        while let Some(joined) = tasks.join_next().await {
            // A task can only fail by panicking; its metrics are then missing.
            if let Ok((index, text)) = joined {
                texts[index] = Some(text);
            }
        }

        let mut reading = CustomReading::default();
        for (slot, index) in self.slots.iter_mut().zip(fetch_of) {
            let text = match &texts[index] {
                Some(Ok(text)) => Ok(text.as_str()),
                Some(Err(why)) => Err(why.clone()),
                None => Err("the read stopped unexpectedly".to_owned()),
            };
            let result = text.and_then(|text| slot.value(text, now));
            let name = &slot.metric.name;
            match (slot.log.record(result.is_ok()), &result) {
                (Transition::StartedFailing, Err(error)) => {
                    tracing::warn!(metric = %name, %error, "custom metric failing; left out of samples until it recovers");
                }
                (Transition::Recovered, _) => {
                    tracing::info!(metric = %name, "custom metric recovered");
                }
                _ => {}
            }
            match result {
                Ok(Some(value)) => reading.values.push((name.clone(), value)),
                Ok(None) => {}
                Err(why) => reading.errors.push((name.clone(), why)),
            }
        }
        reading
    }
}

impl Slot {
    /// This metric's value in what its fetch read: `Ok(None)` when there is
    /// no value yet without anything being wrong (a counter's first reading).
    fn value(&mut self, text: &str, now: Instant) -> Result<Option<f64>, String> {
        match &self.metric.source {
            Source::Prometheus { url, query } => {
                let found = prometheus::find(text, query).map_err(|why| format!("{url}: {why}"))?;
                if !found.value.is_finite() {
                    return Err(format!("{url}: `{query}` is {}", found.value));
                }
                if !found.cumulative {
                    self.rate.clear();
                    return Ok(Some(found.value));
                }
                match self.rate.update(found.value, now) {
                    Step::Rate(rate) => Ok(Some(rate)),
                    Step::First => Ok(None),
                    Step::Reset => {
                        tracing::debug!(metric = %self.metric.name, "counter went down (reset); no rate this pull");
                        Ok(None)
                    }
                }
            }
            Source::File { path } => number(&path.display().to_string(), text).map(Some),
            Source::Command { argv } => {
                let program = argv.first().map_or("", String::as_str);
                number(&format!("`{program}`"), text).map(Some)
            }
        }
    }
}

impl Fetch {
    fn of(source: &Source) -> Self {
        match source {
            Source::Prometheus { url, .. } => Fetch::Http(url.clone()),
            Source::File { path } => Fetch::File(path.clone()),
            Source::Command { argv } => Fetch::Command(argv.clone()),
        }
    }

    /// The text it read, or why it could not.
    async fn run(self, timeout: Duration) -> Result<String, String> {
        match self {
            Fetch::Http(url) => {
                let read = crate::http::get_body(&url, PROMETHEUS_ACCEPT, MAX_SCRAPE_BYTES);
                tokio::time::timeout(timeout, read)
                    .await
                    .unwrap_or_else(|_| Err(format!("{url}: {}", timed_out(timeout))))
            }
            Fetch::File(path) => tokio::time::timeout(timeout, read_file(&path))
                .await
                .unwrap_or_else(|_| Err(format!("{}: {}", path.display(), timed_out(timeout)))),
            Fetch::Command(argv) => run_command(&argv, timeout).await,
        }
    }
}

async fn read_file(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {}", path.display(), describe(&e));
    let file = tokio::fs::File::open(path).await.map_err(cannot)?;
    let (text, whole) = read_capped(file, MAX_NUMBER_TEXT).await.map_err(cannot)?;
    if !whole {
        return Err(format!(
            "{} is larger than {MAX_NUMBER_TEXT} bytes; it should hold one number",
            path.display()
        ));
    }
    Ok(text)
}

/// Runs `argv` and returns its stdout; a non-zero exit or the time-out
/// (the program is then killed) is a failure.
async fn run_command(argv: &[String], timeout: Duration) -> Result<String, String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {}", describe(&e)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let outcome = tokio::time::timeout(timeout, async {
        tokio::join!(
            read_capped(stdout, MAX_NUMBER_TEXT),
            read_capped(stderr, MAX_STDERR),
            child.wait()
        )
    })
    .await;
    let (stdout, stderr, status) = match outcome {
        Ok(done) => done,
        Err(_) => {
            // Kill and reap it now rather than leave that to kill_on_drop's background reaper.
            let _ = child.kill().await;
            return Err(format!("`{program}`: {}", timed_out(timeout)));
        }
    };
    let status = status.map_err(|e| format!("waiting for `{program}`: {}", describe(&e)))?;
    if !status.success() {
        let stderr = stderr.map(|(text, _)| text).unwrap_or_default();
        let first = stderr.lines().map(str::trim).find(|l| !l.is_empty());
        return Err(match first {
            Some(line) => format!("`{program}`: {}: {}", describe_exit(status), quote(line)),
            None => format!("`{program}`: {}", describe_exit(status)),
        });
    }
    let (text, whole) =
        stdout.map_err(|e| format!("reading the output of `{program}`: {}", describe(&e)))?;
    if !whole {
        return Err(format!(
            "`{program}` printed more than {MAX_NUMBER_TEXT} bytes; it should print one number"
        ));
    }
    Ok(text)
}

/// Reads to the end, keeping the first `max` bytes; whether that was all.
/// A writer is never left blocked on a full pipe.
async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    max: usize,
) -> std::io::Result<(String, bool)> {
    let mut kept = Vec::new();
    let mut whole = true;
    let mut chunk = [0u8; 4096];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((String::from_utf8_lossy(&kept).into_owned(), whole));
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
        whole &= n <= room;
    }
}

/// The one number `text` holds, surrounding whitespace aside; `what` names
/// where it came from.
fn number(what: &str, text: &str) -> Result<f64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{what} gave no number (empty)"));
    }
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{what} gave {}, not a number", quote(text)))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{what} gave {text}, not a finite number"))
    }
}

/// `text` in quotes, cut short if long.
fn quote(text: &str) -> String {
    if text.chars().count() > MAX_QUOTED {
        let cut: String = text.chars().take(MAX_QUOTED).collect();
        format!("{cut:?}…")
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// Long enough that a read that must succeed never races it, even on a
    /// loaded machine.
    const GENEROUS: Duration = Duration::from_secs(30);
    /// For reads that must time out: nothing below finishes this fast.
    const TINY: Duration = Duration::from_millis(200);

    fn metric(name: &str, source: Source, timeout: Duration) -> MetricSource {
        MetricSource {
            name: name.to_owned(),
            source,
            timeout,
        }
    }

    fn command(argv: &[&str]) -> Source {
        Source::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn prometheus(url: &str, metric: &str, labels: &[(&str, &str)]) -> Source {
        Source::Prometheus {
            url: url.to_owned(),
            query: Query {
                metric: metric.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            },
        }
    }

    /// A `/metrics` endpoint on 127.0.0.1 serving each page sent on the
    /// returned channel, the latest one to every request from then on.
    /// Requests are counted, so tests can tell how many scrapes ran.
    async fn metrics_server() -> (
        String,
        mpsc::UnboundedSender<String>,
        mpsc::UnboundedReceiver<String>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let (pages, mut next_page) = mpsc::unbounded_channel::<String>();
        let (requests, seen) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut page = String::new();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                while let Ok(p) = next_page.try_recv() {
                    page = p;
                }
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&chunk[..n]);
                }
                let _ = requests.send(String::from_utf8_lossy(&request).into_owned());
                // Chunked, as Go's net/http sends a page of unknown length.
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{page}\r\n0\r\n\r\n",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (url, pages, seen)
    }

    const PAGE_1: &str = "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total{code=\"200\"} 100\nrequests_total{code=\"500\"} 7\n# TYPE queue gauge\nqueue{name=\"a, \\\"b\\\"\"} 4.5\n";
    const PAGE_2: &str = "# TYPE requests_total counter\nrequests_total{code=\"200\"} 150\nrequests_total{code=\"500\"} 9\n# TYPE queue gauge\nqueue{name=\"a, \\\"b\\\"\"} 5\n";
    /// The workload restarted: its counter began again.
    const PAGE_3: &str = "# TYPE requests_total counter\nrequests_total{code=\"200\"} 10\nqueue{name=\"a, \\\"b\\\"\"} NaN\n";
    const PAGE_4: &str = "# TYPE requests_total counter\nrequests_total{code=\"200\"} 30\nqueue{name=\"a, \\\"b\\\"\"} 1\n";

    #[tokio::test]
    async fn prometheus_gauges_counters_resets_and_missing_values_over_real_http() {
        let (url, pages, mut requests) = metrics_server().await;
        let mut custom = CustomMetrics::new(vec![
            metric(
                "ok_rps",
                prometheus(&url, "requests_total", &[("code", "200")]),
                GENEROUS,
            ),
            metric("all_rps", prometheus(&url, "requests_total", &[]), GENEROUS),
            metric(
                "queue",
                prometheus(&url, "queue", &[("name", "a, \"b\"")]),
                GENEROUS,
            ),
            metric("typo", prometheus(&url, "requests_totl", &[]), GENEROUS),
        ]);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let values = |r: &CustomReading| r.values.clone();
        let pair = |n: &str, v: f64| (n.to_owned(), v);

        pages.send(PAGE_1.into()).unwrap();
        let first = custom.read(at(0), GENEROUS).await;
        // Counters have no rate on their first reading; the gauge is read as it is.
        assert_eq!(values(&first), [pair("queue", 4.5)]);
        assert_eq!(
            first.errors,
            [(
                "typo".to_owned(),
                format!("{url}: no series `requests_totl`")
            )]
        );
        // Four metrics of one page: one scrape, asking for the text format.
        let request = requests.recv().await.unwrap();
        assert!(
            request.starts_with("GET /metrics HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("Accept: text/plain;version=0.0.4"),
            "{request}"
        );
        assert!(requests.try_recv().is_err(), "one scrape per pull");

        pages.send(PAGE_2.into()).unwrap();
        let second = custom.read(at(5), GENEROUS).await;
        // (150 - 100) / 5 s and (159 - 107) / 5 s.
        assert_eq!(
            values(&second),
            [
                pair("ok_rps", 10.0),
                pair("all_rps", 10.4),
                pair("queue", 5.0)
            ]
        );

        pages.send(PAGE_3.into()).unwrap();
        let third = custom.read(at(10), GENEROUS).await;
        // A reset and a NaN are missing, never 0.
        assert!(third.values.is_empty());
        let errors: Vec<&str> = third.errors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(errors, ["queue", "typo"]);
        assert_eq!(
            third.errors[0].1,
            format!("{url}: `queue{{name=\"a, \\\"b\\\"\"}}` is NaN")
        );

        pages.send(PAGE_4.into()).unwrap();
        let fourth = custom.read(at(20), GENEROUS).await;
        // (30 - 10) / 10 s for both; the 500s series is gone.
        assert_eq!(
            values(&fourth),
            [
                pair("ok_rps", 2.0),
                pair("all_rps", 2.0),
                pair("queue", 1.0)
            ]
        );
        assert!(!custom.slots[2].log.failing);
        assert!(custom.slots[3].log.failing);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_missing() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/metrics");
        let mut custom =
            CustomMetrics::new(vec![metric("m", prometheus(&url, "up", &[]), GENEROUS)]);
        let reading = custom.read(Instant::now(), GENEROUS).await;
        assert!(reading.values.is_empty());
        assert_eq!(
            reading.errors,
            [(
                "m".to_owned(),
                format!("connect to 127.0.0.1:{port}: connection refused")
            )]
        );
    }

    #[tokio::test]
    async fn an_endpoint_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let mut custom = CustomMetrics::new(vec![metric("m", prometheus(&url, "up", &[]), TINY)]);
        let reading = custom.read(Instant::now(), GENEROUS).await;
        assert!(reading.values.is_empty());
        assert_eq!(
            reading.errors,
            [("m".to_owned(), format!("{url}: timed out after 200ms"))]
        );
        drop(listener);
    }

    #[tokio::test]
    async fn files_hold_one_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("good"), "  42.5\n").unwrap();
        std::fs::write(path("words"), "forty-two\n").unwrap();
        std::fs::write(path("empty"), "\n").unwrap();
        std::fs::write(path("inf"), "inf\n").unwrap();
        std::fs::write(path("big"), "1".repeat(MAX_NUMBER_TEXT + 1)).unwrap();
        let file = |name: &str| metric(name, Source::File { path: path(name) }, GENEROUS);
        let mut custom = CustomMetrics::new(vec![
            file("good"),
            file("words"),
            file("empty"),
            file("inf"),
            file("big"),
            file("absent"),
        ]);
        let reading = custom.read(Instant::now(), GENEROUS).await;
        assert_eq!(reading.values, [("good".to_owned(), 42.5)]);
        let shown = |name: &str| path(name).display().to_string();
        let errors: Vec<String> = reading.errors.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(
            errors,
            [
                format!("{} gave \"forty-two\", not a number", shown("words")),
                format!("{} gave no number (empty)", shown("empty")),
                format!("{} gave inf, not a finite number", shown("inf")),
                format!(
                    "{} is larger than 4096 bytes; it should hold one number",
                    shown("big")
                ),
                format!("cannot read {}: No such file or directory", shown("absent")),
            ]
        );

        // A file that gets a number recovers.
        std::fs::write(path("empty"), "7").unwrap();
        let reading = custom.read(Instant::now(), GENEROUS).await;
        assert!(reading.values.contains(&("empty".to_owned(), 7.0)));
        assert!(!custom.slots[2].log.failing);
    }

    #[tokio::test]
    async fn commands_print_one_number() {
        let mut custom = CustomMetrics::new(vec![
            metric("answer", command(&["sh", "-c", "echo 42"]), GENEROUS),
            metric(
                "fails",
                command(&["sh", "-c", "echo 1; echo 'no db' >&2; exit 3"]),
                GENEROUS,
            ),
            metric("chatty", command(&["sh", "-c", "echo hello"]), GENEROUS),
            metric("absent", command(&["/nonexistent/ebb-metric"]), GENEROUS),
            metric("slow", command(&["sleep", "30"]), TINY),
        ]);
        let started = Instant::now();
        let reading = custom.read(Instant::now(), GENEROUS).await;
        // The sleeper was killed at its time-out, not waited for.
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(reading.values, [("answer".to_owned(), 42.0)]);
        assert_eq!(
            reading.errors,
            [
                (
                    "fails".to_owned(),
                    "`sh`: exit status 3: \"no db\"".to_owned()
                ),
                (
                    "chatty".to_owned(),
                    "`sh` gave \"hello\", not a number".to_owned()
                ),
                (
                    "absent".to_owned(),
                    "cannot run `/nonexistent/ebb-metric`: No such file or directory".to_owned()
                ),
                (
                    "slow".to_owned(),
                    "`sleep`: timed out after 200ms".to_owned()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn the_budget_bounds_every_source() {
        let mut custom =
            CustomMetrics::new(vec![metric("slow", command(&["sleep", "30"]), GENEROUS)]);
        let reading = custom.read(Instant::now(), TINY).await;
        assert_eq!(
            reading.errors,
            [(
                "slow".to_owned(),
                "`sleep`: timed out after 200ms".to_owned()
            )]
        );
    }

    #[tokio::test]
    async fn no_sources_read_nothing() {
        let mut custom = CustomMetrics::new(Vec::new());
        assert_eq!(
            custom.read(Instant::now(), GENEROUS).await,
            CustomReading::default()
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number("f", "\t-3e2 \n"), Ok(-300.0));
        assert_eq!(
            number("f", "NaN"),
            Err("f gave NaN, not a finite number".into())
        );
        assert_eq!(
            number("f", "1 2"),
            Err("f gave \"1 2\", not a number".into())
        );
        let long = "x".repeat(100);
        assert_eq!(
            number("f", &long),
            Err(format!("f gave \"{}\"…, not a number", "x".repeat(60)))
        );
    }
}
