//! The recording fake the engine tests launch through (test-only). It keeps
//! its instances in memory and honours the provider contract, so it passes
//! the conformance suite like every real provider: describe reports what
//! exists, release is idempotent, a failed launch leaves nothing, and a
//! provider made by [`FakeProvider::restarted`] shares the state, as a
//! restarted controller finds a real provider's instances.
//!
//! What it adds for tests: the ids it launched and released, in order;
//! failures on demand ([`FakeProvider::fail_launches`]); instances killed
//! from outside ([`FakeProvider::kill`]); releases held until the test lets
//! them go ([`FakeProvider::hold_releases`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{LaunchRequest, Launched, Provider, ProviderError, ProviderInstance, Result};
use ebb_core::model::ScalingConfiguration;

/// A configuration with this `instance_type` cannot be launched by the fake.
pub(crate) const FAKE_INVALID_TYPE: &str = "fake-invalid";

#[derive(Default)]
struct State {
    instances: BTreeMap<String, Known>,
    launched: Vec<String>,
    released: Vec<String>,
    /// How many of the next launches fail (half-made, then undone).
    failing: u32,
    serial: u64,
    /// Whether launches get an address (10.0.<serial>).
    addresses: bool,
}

/// What the fake knows of one instance.
#[derive(Clone)]
struct Known {
    provider_id: String,
    address: Option<String>,
    alive: bool,
}

/// Two notifications: the fake's release started, and the test lets it finish.
#[derive(Default)]
pub(crate) struct ReleaseGate {
    pub(crate) releasing: Notify,
    pub(crate) let_go: Notify,
}

#[derive(Default)]
pub(crate) struct FakeProvider {
    state: Arc<Mutex<State>>,
    gate: Mutex<Option<Arc<ReleaseGate>>>,
}

impl FakeProvider {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A fake that gives each launch an address, as a VM provider would.
    pub(crate) fn with_addresses() -> Self {
        let fake = Self::default();
        fake.state().addresses = true;
        fake
    }

    /// Another provider over the same instances: the controller after a restart.
    pub(crate) fn restarted(&self) -> Self {
        Self {
            state: self.state.clone(),
            gate: Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids of the instances that exist, sorted.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.state().instances.keys().cloned().collect()
    }

    /// Every id launched successfully, in order.
    pub(crate) fn launched(&self) -> Vec<String> {
        self.state().launched.clone()
    }

    /// Every id a release was asked for, in order (unknown ones too).
    pub(crate) fn released(&self) -> Vec<String> {
        self.state().released.clone()
    }

    /// Puts an instance there as if launched earlier (by another controller).
    pub(crate) fn insert(&self, instance_id: &str, alive: bool) {
        let mut s = self.state();
        s.serial += 1;
        let provider_id = format!("fake-{}", s.serial);
        s.instances.insert(
            instance_id.to_owned(),
            Known {
                provider_id,
                address: None,
                alive,
            },
        );
    }

    /// Puts an alive instance there under the given provider id and address.
    pub(crate) fn insert_named(&self, instance_id: &str, provider_id: &str, address: Option<&str>) {
        self.state().instances.insert(
            instance_id.to_owned(),
            Known {
                provider_id: provider_id.to_owned(),
                address: address.map(str::to_owned),
                alive: true,
            },
        );
    }

    /// The instance dies, as a host killed from outside: it stays listed, not alive.
    pub(crate) fn kill(&self, instance_id: &str) {
        if let Some(entry) = self.state().instances.get_mut(instance_id) {
            entry.alive = false;
        }
    }

    /// The next `n` launches fail with a `Launch` error and leave nothing.
    pub(crate) fn fail_launches(&self, n: u32) {
        self.state().failing = n;
    }

    /// From now on each release waits for the returned gate's `let_go`,
    /// after notifying `releasing`.
    pub(crate) fn hold_releases(&self) -> Arc<ReleaseGate> {
        let gate = Arc::new(ReleaseGate::default());
        *self.gate.lock().unwrap_or_else(|e| e.into_inner()) = Some(gate.clone());
        gate
    }
}

#[tonic::async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn check(&self, configuration: &ScalingConfiguration) -> Result<()> {
        if configuration.instance_type == FAKE_INVALID_TYPE {
            return Err(ProviderError::Invalid(format!(
                "instance_type `{FAKE_INVALID_TYPE}` cannot be launched by the fake provider"
            )));
        }
        Ok(())
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Launched> {
        self.check(&request.configuration)?;
        let id = request.instance_id;
        let mut s = self.state();
        if s.instances.contains_key(&id) {
            return Err(ProviderError::Launch {
                instance: id,
                message: "it already exists".into(),
            });
        }
        if s.failing > 0 {
            s.failing -= 1;
            return Err(ProviderError::Launch {
                instance: id,
                message: "the fake was told to fail".into(),
            });
        }
        s.serial += 1;
        let provider_id = format!("fake-{}", s.serial);
        let address = s
            .addresses
            .then(|| format!("10.0.{}.{}", s.serial / 256, s.serial % 256));
        s.instances.insert(
            id.clone(),
            Known {
                provider_id: provider_id.clone(),
                address: address.clone(),
                alive: true,
            },
        );
        s.launched.push(id);
        Ok(Launched {
            provider_id,
            address,
        })
    }

    async fn release(&self, instance_id: &str) -> Result<()> {
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(gate) = gate {
            gate.releasing.notify_one();
            gate.let_go.notified().await;
        }
        let mut s = self.state();
        s.released.push(instance_id.to_owned());
        s.instances.remove(instance_id);
        Ok(())
    }

    async fn describe(&self) -> Result<Vec<ProviderInstance>> {
        Ok(self
            .state()
            .instances
            .iter()
            .map(|(id, known)| ProviderInstance {
                instance_id: id.clone(),
                alive: known.alive,
                provider_id: Some(known.provider_id.clone()),
                address: known.address.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::conformance::{self, Subject};

    struct Fake(FakeProvider);

    impl Fake {
        fn addresses(&self) -> bool {
            self.0.state().addresses
        }
    }

    #[tonic::async_trait]
    impl Subject for Fake {
        async fn provider(&self) -> Arc<dyn Provider> {
            Arc::new(self.0.restarted())
        }
        fn request(&self, id: &str) -> LaunchRequest {
            conformance::request(id, "")
        }
        fn half_made(&self, id: &str) -> LaunchRequest {
            self.0.fail_launches(1);
            self.request(id)
        }
        fn invalid(&self, id: &str) -> Option<LaunchRequest> {
            Some(conformance::request(id, FAKE_INVALID_TYPE))
        }
        async fn kill(&self, id: &str) {
            self.0.kill(id);
        }
        async fn leftovers(&self, id: &str) -> Vec<String> {
            self.0
                .ids()
                .into_iter()
                .filter(|i| i == id)
                .map(|i| format!("fake instance {i}"))
                .collect()
        }
        fn has_addresses(&self) -> bool {
            self.addresses()
        }
    }

    #[tokio::test]
    async fn the_fake_passes_the_conformance_suite() {
        conformance::run_all(&Fake(FakeProvider::new())).await;
        conformance::run_all(&Fake(FakeProvider::with_addresses())).await;
    }

    #[tokio::test]
    async fn the_fake_records_launches_and_releases() {
        let fake = FakeProvider::new();
        fake.launch(conformance::request("i-1", "")).await.unwrap();
        fake.fail_launches(1);
        fake.launch(conformance::request("i-2", ""))
            .await
            .unwrap_err();
        fake.release("i-1").await.unwrap();
        fake.release("i-9").await.unwrap();
        assert_eq!(fake.launched(), ["i-1"]);
        assert_eq!(fake.released(), ["i-1", "i-9"]);
        assert!(fake.ids().is_empty());
    }
}
