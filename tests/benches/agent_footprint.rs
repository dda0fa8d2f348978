//! The agent's footprint beside Prometheus node_exporter's, in one run.
//!
//! A small puller stands in for the controller: an mTLS `AgentService` with
//! certificates from ebb's own CA, which sends Pulls at a chosen rate and
//! counts the bytes on its TCP stream. node_exporter runs with only the
//! collectors that match the agent's (cpu, meminfo, loadavg, netdev) and is
//! scraped the way Prometheus scrapes it. Both are driven at one sample a
//! second, side by side, then as fast as they answer, one after the other.
//!
//! `cargo build --profile agent -p ebb-agent && cargo bench -p ebb-tests
//! --bench agent_footprint -- [--slow 1000] [--fast 2000] [--agent-bin PATH]
//! [--smoke]`
//!
//! It measures the agent as packaged, `target/agent/ebb-agent` (the size-built
//! profile); `--smoke` (CI) takes the build it runs beside instead.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::{CpuTime, MemoryKb, clock_ticks, flag, load_average, memory_kb, switch};
use ebb_proto::v1::agent_message::Body as AgentBody;
use ebb_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use ebb_proto::v1::controller_message::Body as ControllerBody;
use ebb_proto::v1::{AgentMessage, Collector, ControllerMessage, ProtocolVersion, Pull, Welcome};
use ebb_tests::{Sandbox, bin, eventually, profile_dir};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status, Streaming};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Bytes read and written on the puller's TCP streams.
#[derive(Default)]
struct Wire {
    read: AtomicU64,
    written: AtomicU64,
}

impl Wire {
    fn total(&self) -> u64 {
        self.read.load(Ordering::Relaxed) + self.written.load(Ordering::Relaxed)
    }
}

/// A TCP stream that counts its bytes, under the TLS layer.
struct Counting {
    inner: TcpStream,
    wire: Arc<Wire>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.wire.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.wire.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.wire.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for Counting {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// `count` pulls, one every `every` (None: each as soon as the last is answered).
struct Phase {
    count: u64,
    every: Option<Duration>,
    done: oneshot::Sender<PhaseResult>,
}

struct PhaseResult {
    /// Protobuf bytes of the samples, without gRPC, HTTP/2 or TLS framing.
    payload_bytes: u64,
}

/// The controller stand-in: one agent stream, driven by phases from main.
struct Puller {
    phases: Mutex<Option<mpsc::Receiver<Phase>>>,
    connected: Mutex<Option<oneshot::Sender<()>>>,
}

#[tonic::async_trait]
impl AgentService for Puller {
    type ConnectStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        match inbound.message().await? {
            Some(AgentMessage {
                body: Some(AgentBody::Hello(_)),
            }) => {}
            _ => return Err(Status::invalid_argument("expected a Hello")),
        }
        let phases = self
            .phases
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Status::already_exists("one agent stream per run"))?;
        let (tx, rx) = mpsc::channel(4);
        let welcome = Welcome {
            protocol_version: ProtocolVersion::ProtocolVersion1 as i32,
            sampling_interval_ms: 1000,
            // The agent's collectors that match node_exporter's four.
            collect: [
                Collector::Cpu,
                Collector::Memory,
                Collector::Load,
                Collector::Network,
            ]
            .map(|c| c as i32)
            .to_vec(),
        };
        let _ = tx
            .send(Ok(ControllerMessage {
                body: Some(ControllerBody::Welcome(welcome)),
            }))
            .await;
        tokio::spawn(drive(inbound, tx, phases));
        if let Some(c) = self.connected.lock().unwrap().take() {
            let _ = c.send(());
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn drive(
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<ControllerMessage, Status>>,
    mut phases: mpsc::Receiver<Phase>,
) {
    let mut seq = 0;
    while let Some(phase) = phases.recv().await {
        let mut tick = phase.every.map(tokio::time::interval);
        let mut payload_bytes = 0;
        for _ in 0..phase.count {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            seq += 1;
            let pull = ControllerMessage {
                body: Some(ControllerBody::Pull(Pull { seq })),
            };
            if tx.send(Ok(pull)).await.is_err() {
                return;
            }
            loop {
                match inbound.message().await {
                    Ok(Some(AgentMessage {
                        body: Some(AgentBody::Sample(s)),
                    })) if s.seq == seq => {
                        payload_bytes += s.encoded_len() as u64;
                        break;
                    }
                    Ok(Some(_)) => {}
                    other => panic!("the agent's stream ended: {other:?}"),
                }
            }
        }
        let _ = phase.done.send(PhaseResult { payload_bytes });
    }
}

/// Starts the puller on loopback; returns its address, the phase sender,
/// and a receiver that fires when the agent has connected.
fn start_puller(
    rt: &tokio::runtime::Runtime,
    ca: &ebb_certs::Ca,
    wire: Arc<Wire>,
) -> anyhow::Result<(SocketAddr, mpsc::Sender<Phase>, oneshot::Receiver<()>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let server = ca.issue_server(&["localhost".into()], &["127.0.0.1".parse()?])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())?)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let chain = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (phase_tx, phase_rx) = mpsc::channel(1);
    let (conn_tx, conn_rx) = oneshot::channel();
    let puller = Puller {
        phases: Mutex::new(Some(phase_rx)),
        connected: Mutex::new(Some(conn_tx)),
    };
    let (tls_tx, tls_rx) = mpsc::channel::<Result<_, std::io::Error>>(4);
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let stream = Counting {
                inner: tcp,
                wire: wire.clone(),
            };
            if let Ok(tls) = acceptor.accept(stream).await {
                let _ = tls_tx.send(Ok(tls)).await;
            }
        }
    });
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(puller))
            .serve_with_incoming(ReceiverStream::new(tls_rx)),
    );
    Ok((addr, phase_tx, conn_rx))
}

/// Counts the bytes read through it.
struct CountingRead {
    inner: StdStream,
    read: u64,
}

impl Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A scraper that asks as Prometheus does, on one kept-alive connection.
struct Scraper {
    conn: BufReader<CountingRead>,
    request: String,
    written: u64,
}

impl Scraper {
    fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let s = StdStream::connect(addr)?;
        s.set_nodelay(true)?;
        // Prometheus 2.x's request headers; it asks for gzip.
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n"
        );
        Ok(Self {
            conn: BufReader::new(CountingRead { inner: s, read: 0 }),
            request,
            written: 0,
        })
    }

    fn bytes(&self) -> u64 {
        self.written + self.conn.get_ref().read
    }

    /// One scrape; the body's length as received (compressed).
    fn scrape(&mut self) -> anyhow::Result<usize> {
        self.conn
            .get_mut()
            .inner
            .write_all(self.request.as_bytes())?;
        self.written += self.request.len() as u64;
        let mut line = String::new();
        self.conn.read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("HTTP/1.1 200"), "scrape: {line}");
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.conn.read_line(&mut line)?;
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>()?);
            }
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = 0;
        if chunked {
            loop {
                line.clear();
                self.conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)?;
                let mut chunk = vec![0; size + 2];
                self.conn.read_exact(&mut chunk)?;
                body += size;
                if size == 0 {
                    break;
                }
            }
        } else {
            let n = length.ok_or_else(|| anyhow::anyhow!("no length"))?;
            let mut buf = vec![0; n];
            self.conn.read_exact(&mut buf)?;
            body = n;
        }
        Ok(body)
    }
}

/// What one side used over one phase.
struct Usage {
    samples: u64,
    cpu_ticks_ms: f64,
    cpu_run_ms: f64,
    bytes: u64,
    memory: MemoryKb,
    elapsed: Duration,
    payload_bytes: Option<u64>,
}

impl Usage {
    fn per_sample_ms(&self) -> (f64, f64) {
        let n = self.samples as f64;
        (self.cpu_ticks_ms / n, self.cpu_run_ms / n)
    }
}

/// Measures `f` (which takes `samples` samples) against process `pid`.
fn measure(
    pid: u32,
    samples: u64,
    bytes: impl Fn() -> u64,
    f: impl FnOnce() -> Option<u64>,
) -> Usage {
    let hz = clock_ticks();
    let (cpu0, b0, t0) = (CpuTime::of(pid), bytes(), Instant::now());
    let payload_bytes = f();
    let elapsed = t0.elapsed();
    let (ticks, run) = CpuTime::of(pid).ms_since(&cpu0, hz);
    let memory = memory_kb(pid);
    Usage {
        samples,
        cpu_ticks_ms: ticks,
        cpu_run_ms: run,
        bytes: bytes() - b0,
        memory,
        elapsed,
        payload_bytes,
    }
}

struct Child2(Child);

impl Drop for Child2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn run_phase(phases: &mpsc::Sender<Phase>, count: u64, every: Option<Duration>) -> u64 {
    let (done, rx) = oneshot::channel();
    phases
        .blocking_send(Phase { count, every, done })
        .expect("puller running");
    rx.blocking_recv().expect("phase finished").payload_bytes
}

/// `target/agent/ebb-agent`, built with the packages' size profile.
fn packaged_agent() -> anyhow::Result<std::path::PathBuf> {
    // target/release -> target/agent/ebb-agent
    let path = profile_dir()
        .parent()
        .context("target dir")?
        .join("agent")
        .join("ebb-agent");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the agent as packaged with `cargo build --profile agent -p ebb-agent` (or pass --agent-bin)",
        path.display()
    );
    Ok(path)
}

fn main() -> anyhow::Result<()> {
    let smoke = switch("--smoke");
    let slow: u64 = flag("--slow", if smoke { 3 } else { 1000 });
    let fast: u64 = flag("--fast", if smoke { 50 } else { 2000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let sb = Sandbox::new();
    let dir = sb.path();
    let ca = ebb_certs::Ca::generate("ebb.local", ebb_certs::CA_VALIDITY)?;
    let wire = Arc::new(Wire::default());
    let (addr, phases, connected) = start_puller(&rt, &ca, wire.clone())?;

    let agent_cert = ca.issue_agent("bench-agent", ebb_certs::AGENT_VALIDITY)?;
    agent_cert.write(&dir.join("agent.crt"), &dir.join("agent.key"))?;
    std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "controller = \"{addr}\"\nserver_name = \"localhost\"\n[tls]\nca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n"
        ),
    )?;
    let agent_bin = match flag("--agent-bin", String::new()) {
        given if !given.is_empty() => std::path::PathBuf::from(given),
        _ if smoke => bin("ebb-agent"),
        _ => packaged_agent()?,
    };
    println!("agent: {}", agent_bin.display());
    let agent = Child2(
        Command::new(&agent_bin)
            .arg("--config")
            .arg(&config)
            .env("EBB_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()?,
    );
    let agent_pid = agent.0.id();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), connected).await })??;

    let peer = if std::path::Path::new(NODE_EXPORTER).exists() {
        let listen = free_port()?;
        let child = Child2(
            Command::new(NODE_EXPORTER)
                .arg(format!("--web.listen-address={listen}"))
                .args([
                    "--collector.disable-defaults",
                    "--collector.cpu",
                    "--collector.meminfo",
                    "--collector.loadavg",
                    "--collector.netdev",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let scraper = eventually("node_exporter to listen", Duration::from_secs(30), || {
            Scraper::connect(listen).ok()
        });
        Some((child, scraper))
    } else {
        println!(
            "{NODE_EXPORTER} is not installed (apt-get install prometheus-node-exporter): measuring ebb-agent alone"
        );
        None
    };
    let (ne_pid, mut scraper) = match peer {
        Some((ref c, s)) => (Some(c.0.id()), Some(s)),
        None => (None, None),
    };

    // Warm up both: first collections allocate what later ones reuse.
    run_phase(&phases, 5, None);
    if let Some(s) = scraper.as_mut() {
        for _ in 0..5 {
            s.scrape()?;
        }
    }
    println!(
        "load average before: {}; {slow} samples at 1/s side by side, then {fast} as fast as each answers",
        load_average()
    );

    // One sample a second, both at once.
    let ebb_slow = std::thread::scope(|scope| {
        let ne = scope.spawn(|| {
            let (Some(pid), Some(s)) = (ne_pid, scraper.as_mut()) else {
                return None;
            };
            let s = std::cell::RefCell::new(s);
            Some(measure(
                pid,
                slow,
                || s.borrow().bytes(),
                || {
                    let start = Instant::now();
                    for i in 0..slow {
                        let due = start + Duration::from_secs(i);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        s.borrow_mut().scrape().expect("scrape");
                    }
                    None
                },
            ))
        });
        let ebb = measure(
            agent_pid,
            slow,
            || wire.total(),
            || Some(run_phase(&phases, slow, Some(Duration::from_secs(1)))),
        );
        (ebb, ne.join().expect("scraper thread"))
    });
    let (ebb_slow, ne_slow) = ebb_slow;

    // As fast as each answers, one after the other.
    let ebb_fast = measure(
        agent_pid,
        fast,
        || wire.total(),
        || Some(run_phase(&phases, fast, None)),
    );
    let ne_fast = match (ne_pid, scraper.as_mut()) {
        (Some(pid), Some(s)) => {
            let s = std::cell::RefCell::new(s);
            Some(measure(
                pid,
                fast,
                || s.borrow().bytes(),
                || {
                    for _ in 0..fast {
                        s.borrow_mut().scrape().expect("scrape");
                    }
                    None
                },
            ))
        }
        _ => None,
    };

    report("1 sample/s", &ebb_slow, ne_slow.as_ref());
    report("as fast as possible", &ebb_fast, ne_fast.as_ref());
    println!("load average after: {}", load_average());
    drop(agent);
    Ok(())
}

fn report(phase: &str, ebb: &Usage, ne: Option<&Usage>) {
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}", a / b));
    let (e_ticks, e_run) = ebb.per_sample_ms();
    let ne_per = ne.map(Usage::per_sample_ms);
    println!(
        "\n## {phase}: {} samples each (ebb {:.1} s, node_exporter {})",
        ebb.samples,
        ebb.elapsed.as_secs_f64(),
        ne.map_or("-".into(), |n| format!("{:.1} s", n.elapsed.as_secs_f64()))
    );
    println!("| measure | ebb-agent | node_exporter | ebb / node_exporter |");
    println!("|---|---|---|---|");
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!(
        "| VmRSS (MB) | {:.1} | {} | {} |",
        mb(ebb.memory.rss),
        ne.map_or("-".into(), |n| format!("{:.1}", mb(n.memory.rss))),
        ratio(ebb.memory.rss as f64, ne.map(|n| n.memory.rss as f64))
    );
    println!(
        "| VmHWM (MB) | {:.1} | {} | {} |",
        mb(ebb.memory.hwm),
        ne.map_or("-".into(), |n| format!("{:.1}", mb(n.memory.hwm))),
        ratio(ebb.memory.hwm as f64, ne.map(|n| n.memory.hwm as f64))
    );
    println!(
        "| of VmRSS: RssAnon (heap, stacks) / RssFile (code) (MB) | {:.1} / {:.1} | {} | |",
        mb(ebb.memory.anon),
        mb(ebb.memory.file),
        ne.map_or("-".into(), |n| format!(
            "{:.1} / {:.1}",
            mb(n.memory.anon),
            mb(n.memory.file)
        ))
    );
    println!(
        "| CPU per sample, utime+stime (ms) | {e_ticks:.3} | {} | {} |",
        ne_per.map_or("-".into(), |p| format!("{:.3}", p.0)),
        ratio(e_ticks, ne_per.map(|p| p.0))
    );
    println!(
        "| CPU per sample, schedstat (ms) | {e_run:.3} | {} | {} |",
        ne_per.map_or("-".into(), |p| format!("{:.3}", p.1)),
        ratio(e_run, ne_per.map(|p| p.1))
    );
    let per = |u: &Usage| u.bytes as f64 / u.samples as f64;
    println!(
        "| bytes on the wire per sample (both ways) | {:.0} | {} | {} |",
        per(ebb),
        ne.map_or("-".into(), |n| format!("{:.0}", per(n))),
        ratio(per(ebb), ne.map(per))
    );
    if let Some(p) = ebb.payload_bytes {
        println!(
            "| (ebb: protobuf Sample alone, bytes) | {:.0} | | |",
            p as f64 / ebb.samples as f64
        );
    }
}
