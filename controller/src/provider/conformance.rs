//! The conformance suite every [`Provider`] passes (test-only): implement
//! [`Subject`] for the provider — how to make it on its state, a good
//! launch request, one that fails half-way, what it may leave behind on the
//! host — and call [`run_all`].
//!
//! Each case launches its own ids (prefixed with the case's number), so the
//! cases share one state dir and still see only their own instances, and
//! each releases what it launched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{LaunchRequest, Provider, ProviderError, ProviderInstance};
use ebb_core::model::ScalingConfiguration;

/// How long a case waits for something another process does (a kill from
/// outside to show); generous, for a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A provider under test and what the suite needs to drive it.
#[tonic::async_trait]
pub(crate) trait Subject: Send + Sync {
    /// A provider on the subject's state (its dir, its bridge). Each call
    /// makes a new one on the same state: a controller after a restart.
    async fn provider(&self) -> Arc<dyn Provider>;
    /// A request that launches.
    fn request(&self, id: &str) -> LaunchRequest;
    /// A request whose launch fails half-way, after the provider made
    /// something on the host.
    fn half_made(&self, id: &str) -> LaunchRequest;
    /// A configuration the provider refuses (`Invalid`), if it has one.
    fn invalid(&self, id: &str) -> Option<LaunchRequest>;
    /// Kills the instance from outside, as a crash or an operator would.
    async fn kill(&self, id: &str);
    /// What of the instance is still on the host (dirs, namespaces, taps,
    /// processes), one line each; empty once it is gone.
    async fn leftovers(&self, id: &str) -> Vec<String>;
    /// Whether every instance gets an address.
    fn has_addresses(&self) -> bool {
        false
    }
    /// The provider's own typed failures (exec: a time-out is `TimedOut`).
    async fn typed_failures(&self, _provider: &dyn Provider) {}
}

/// A request for `id` with a configuration of `instance_type` and no workload.
pub(crate) fn request(id: &str, instance_type: &str) -> LaunchRequest {
    LaunchRequest {
        instance_id: id.to_owned(),
        group_id: "asg-conformance".to_owned(),
        configuration: ScalingConfiguration {
            id: "asc-conformance".to_owned(),
            group_id: "asg-conformance".to_owned(),
            name: "conformance".to_owned(),
            instance_type: instance_type.to_owned(),
            command: Vec::new(),
            env: BTreeMap::new(),
            tags: BTreeMap::new(),
            user_data: String::new(),
            created_at_ms: 0,
            health_checks: Vec::new(),
            metrics: Vec::new(),
            exec: None,
            microvm: None,
        },
        controller: "127.0.0.1:7440".to_owned(),
        server_name: "ebb-controller".to_owned(),
        ca_pem: "CA PEM".to_owned(),
        cert_pem: "CERT PEM".to_owned(),
        key_pem: "KEY PEM".to_owned(),
        sampling_interval_secs: 5,
    }
}

/// Runs every case against `subject`; panics naming the first that fails.
pub(crate) async fn run_all(subject: &dyn Subject) {
    let cases = [
        "launch_then_describe",
        "release_is_idempotent",
        "a_half_made_launch_is_cleaned_up",
        "readopted_after_a_restart",
        "describe_reports_exactly_what_exists",
        "failures_are_typed",
        "concurrent_launches",
    ];
    for (n, name) in cases.into_iter().enumerate() {
        let _naming = Naming(name);
        let p = format!("c{n}");
        match name {
            "launch_then_describe" => launch_then_describe(subject, &p).await,
            "release_is_idempotent" => release_is_idempotent(subject, &p).await,
            "a_half_made_launch_is_cleaned_up" => half_made(subject, &p).await,
            "readopted_after_a_restart" => readopted(subject, &p).await,
            "describe_reports_exactly_what_exists" => exactly(subject, &p).await,
            "failures_are_typed" => typed(subject, &p).await,
            _ => concurrent(subject, &p).await,
        }
    }
}

/// Names the case that panicked (the panic message says what).
struct Naming(&'static str);

impl Drop for Naming {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("provider conformance case `{}` failed", self.0);
        }
    }
}

async fn find(provider: &dyn Provider, id: &str) -> Option<ProviderInstance> {
    let all = provider.describe().await.expect("describe");
    let mut found = all.into_iter().filter(|i| i.instance_id == id);
    let first = found.next();
    assert!(found.next().is_none(), "describe lists {id} twice");
    first
}

async fn assert_gone(subject: &dyn Subject, provider: &dyn Provider, id: &str) {
    assert_eq!(find(provider, id).await, None, "describe still lists {id}");
    let left = subject.leftovers(id).await;
    assert!(left.is_empty(), "{id} left behind: {left:#?}");
}

async fn launch_then_describe(subject: &dyn Subject, p: &str) {
    let provider = subject.provider().await;
    let id = format!("{p}-a");
    let launched = provider.launch(subject.request(&id)).await.expect("launch");
    assert!(!launched.provider_id.is_empty(), "an empty provider id");
    assert_eq!(
        launched.address.is_some(),
        subject.has_addresses(),
        "address: {launched:?}"
    );
    let seen = find(provider.as_ref(), &id).await.expect("described");
    assert!(seen.alive, "{seen:?}");
    assert_eq!(seen.provider_id.as_deref(), Some(&*launched.provider_id));
    assert_eq!(seen.address, launched.address);
    provider.release(&id).await.expect("release");
    assert_gone(subject, provider.as_ref(), &id).await;
}

async fn release_is_idempotent(subject: &dyn Subject, p: &str) {
    let provider = subject.provider().await;
    let id = format!("{p}-a");
    provider.launch(subject.request(&id)).await.expect("launch");
    provider.release(&id).await.expect("first release");
    provider.release(&id).await.expect("second release");
    provider
        .release(&format!("{p}-never-launched"))
        .await
        .expect("release of an unknown id");
    assert_gone(subject, provider.as_ref(), &id).await;
}

async fn half_made(subject: &dyn Subject, p: &str) {
    let provider = subject.provider().await;
    let id = format!("{p}-a");
    let err = provider
        .launch(subject.half_made(&id))
        .await
        .expect_err("the half-made launch succeeded");
    assert!(
        matches!(
            err,
            ProviderError::Launch { .. } | ProviderError::TimedOut { .. }
        ),
        "not a typed launch failure: {err:?}"
    );
    assert!(err.to_string().contains(&id), "{err} does not name {id}");
    assert_gone(subject, provider.as_ref(), &id).await;
    // The id can be launched afterwards: nothing of the failure blocks it.
    provider.launch(subject.request(&id)).await.expect("launch");
    provider.release(&id).await.expect("release");
    assert_gone(subject, provider.as_ref(), &id).await;
}

async fn readopted(subject: &dyn Subject, p: &str) {
    let first = subject.provider().await;
    let id = format!("{p}-a");
    let launched = first.launch(subject.request(&id)).await.expect("launch");
    drop(first);
    let restarted = subject.provider().await;
    let seen = find(restarted.as_ref(), &id)
        .await
        .expect("a restarted provider describes the instance");
    assert!(seen.alive, "{seen:?}");
    assert_eq!(seen.provider_id.as_deref(), Some(&*launched.provider_id));
    assert_eq!(seen.address, launched.address);
    restarted.release(&id).await.expect("release");
    assert_gone(subject, restarted.as_ref(), &id).await;
}

async fn exactly(subject: &dyn Subject, p: &str) {
    let provider = subject.provider().await;
    let [a, b, c] = ["a", "b", "c"].map(|s| format!("{p}-{s}"));
    for id in [&a, &b, &c] {
        provider.launch(subject.request(id)).await.expect("launch");
    }
    provider.release(&b).await.expect("release");
    subject.kill(&c).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all = provider.describe().await.expect("describe");
        let ours: BTreeMap<_, _> = all
            .iter()
            .filter(|i| i.instance_id.starts_with(&format!("{p}-")))
            .map(|i| (i.instance_id.clone(), i.alive))
            .collect();
        let want = BTreeMap::from([(a.clone(), true), (c.clone(), false)]);
        if ours == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "describe says {ours:?}, not {want:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
    for id in [&a, &c] {
        provider.release(id).await.expect("release");
        assert_gone(subject, provider.as_ref(), id).await;
    }
    assert_gone(subject, provider.as_ref(), &b).await;
}

async fn typed(subject: &dyn Subject, p: &str) {
    let provider = subject.provider().await;
    if let Some(bad) = subject.invalid(&format!("{p}-a")) {
        let id = bad.instance_id.clone();
        match provider.check(&bad.configuration) {
            Err(ProviderError::Invalid(message)) => assert!(!message.is_empty()),
            other => panic!("check of a bad configuration: {other:?}"),
        }
        match provider.launch(bad).await {
            Err(ProviderError::Invalid(_)) => {}
            other => panic!("launch of a bad configuration: {other:?}"),
        }
        assert_gone(subject, provider.as_ref(), &id).await;
    }
    subject.typed_failures(provider.as_ref()).await;
}

async fn concurrent(subject: &dyn Subject, p: &str) {
    let provider = subject.provider().await;
    let ids: Vec<String> = (0..4).map(|n| format!("{p}-{n}")).collect();
    let launches = ids.iter().map(|id| {
        let provider = provider.clone();
        let request = subject.request(id);
        tokio::spawn(async move { provider.launch(request).await })
    });
    let mut launched = Vec::new();
    for handle in launches.collect::<Vec<_>>() {
        launched.push(handle.await.expect("join").expect("launch"));
    }
    let distinct: BTreeSet<_> = launched.iter().map(|l| &l.provider_id).collect();
    assert_eq!(distinct.len(), 4, "provider ids: {launched:?}");
    if subject.has_addresses() {
        let addresses: BTreeSet<_> = launched.iter().map(|l| &l.address).collect();
        assert_eq!(addresses.len(), 4, "addresses: {launched:?}");
    }
    let all = provider.describe().await.expect("describe");
    for id in &ids {
        let seen: Vec<_> = all.iter().filter(|i| &i.instance_id == id).collect();
        assert!(
            matches!(seen[..], [i] if i.alive),
            "{id} described as {seen:?}"
        );
    }
    let releases = ids.iter().map(|id| {
        let provider = provider.clone();
        let id = id.clone();
        tokio::spawn(async move { provider.release(&id).await })
    });
    for handle in releases.collect::<Vec<_>>() {
        handle.await.expect("join").expect("release");
    }
    for id in &ids {
        assert_gone(subject, provider.as_ref(), id).await;
    }
}
