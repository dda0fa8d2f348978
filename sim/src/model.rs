//! The simulated fleet and load (the model): demand in work units
//! per second; each instance serves up to `capacity` units once it has
//! booted (`boot_secs` after its launch); utilisation is demand over the
//! in-service capacity, capped at 100 %. With `noise`, each instance's
//! reported utilisation is off by a seeded Gaussian factor of its own (load
//! is never spread perfectly), so alarms see a spread like a real fleet's.

/// The model's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelParams {
    /// Work units per second one instance serves at 100 %.
    pub capacity: f64,
    /// Seconds from launch to serving.
    pub boot_secs: i64,
    /// Standard deviation of each instance's reported utilisation, as a
    /// fraction of the fleet's (0.05: ±5 %).
    pub noise: f64,
    pub seed: u64,
}

/// One simulated instance.
#[derive(Debug, Clone)]
pub struct Inst {
    pub id: u64,
    pub launched: i64,
    pub ready_at: i64,
    rng: fastrand::Rng,
}

impl Inst {
    pub fn in_service(&self, now: i64) -> bool {
        now >= self.ready_at
    }
}

/// The group's instances; the policies only ever change how many there are.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub params: ModelParams,
    pub instances: Vec<Inst>,
    next_id: u64,
}

impl Fleet {
    /// A fleet of `n` instances already in service at `now`.
    pub fn new(params: ModelParams, n: u32, now: i64) -> Self {
        let mut f = Fleet {
            params,
            instances: Vec::new(),
            next_id: 0,
        };
        for _ in 0..n {
            f.launch(now - params.boot_secs);
        }
        f
    }

    fn launch(&mut self, now: i64) {
        let id = self.next_id;
        self.next_id += 1;
        // Each instance's noise comes from the seed and its own id, so a run
        // is reproducible whatever order instances come and go in.
        let rng =
            fastrand::Rng::with_seed(self.params.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.instances.push(Inst {
            id,
            launched: now,
            ready_at: now + self.params.boot_secs,
            rng,
        });
    }

    pub fn count(&self) -> u32 {
        self.instances.len() as u32
    }

    pub fn in_service(&self, now: i64) -> u32 {
        self.instances.iter().filter(|i| i.in_service(now)).count() as u32
    }

    pub fn pending(&self, now: i64) -> u32 {
        self.count() - self.in_service(now)
    }

    /// Launches or removes instances to reach `n`, for the baselines: a
    /// scale-in removes instances still booting first (newest first), then
    /// the oldest in service (a ReplicaSet deletes unready pods first).
    pub fn resize(&mut self, n: u32, now: i64) {
        while self.count() < n {
            self.launch(now);
        }
        while self.count() > n {
            let victim = self
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| !i.in_service(now))
                .max_by_key(|(_, i)| i.launched)
                .or_else(|| {
                    self.instances
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, i)| i.launched)
                })
                .map(|(k, _)| k)
                .expect("a fleet above n has an instance");
            self.instances.remove(victim);
        }
    }

    /// Launches `n` more instances.
    pub fn launch_n(&mut self, n: u32, now: i64) {
        for _ in 0..n {
            self.launch(now);
        }
    }

    /// Removes the instances with these ids (a caller's own choice of which).
    pub fn remove_ids(&mut self, ids: &[u64]) {
        self.instances.retain(|i| !ids.contains(&i.id));
    }

    /// The fleet's true utilisation in % (0–100) for `demand`: 100 when
    /// nothing serves and there is demand.
    pub fn utilisation(&self, demand: f64, now: i64) -> f64 {
        let serving = f64::from(self.in_service(now)) * self.params.capacity;
        if serving <= 0.0 {
            return if demand > 0.0 { 100.0 } else { 0.0 };
        }
        (demand / serving * 100.0).min(100.0)
    }

    /// What each in-service instance reports at `now`: (id, in service
    /// since, utilisation in %), with its noise.
    pub fn samples(&mut self, demand: f64, now: i64) -> Vec<(u64, i64, f64)> {
        let u = self.utilisation(demand, now);
        let noise = self.params.noise;
        self.instances
            .iter_mut()
            .filter(|i| i.in_service(now))
            .map(|i| {
                let v = if noise > 0.0 {
                    (u * (1.0 + noise * gaussian(&mut i.rng))).clamp(0.0, 100.0)
                } else {
                    u
                };
                (i.id, i.ready_at, v)
            })
            .collect()
    }
}

/// A standard normal draw (Box-Muller).
pub fn gaussian(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(noise: f64) -> ModelParams {
        ModelParams {
            capacity: 100.0,
            boot_secs: 60,
            noise,
            seed: 1,
        }
    }

    #[test]
    fn a_launched_instance_serves_only_after_boot() {
        let mut f = Fleet::new(params(0.0), 1, 0);
        assert_eq!(f.utilisation(80.0, 0), 80.0);
        f.resize(2, 10);
        assert_eq!((f.count(), f.in_service(69), f.pending(69)), (2, 1, 1));
        assert_eq!(f.utilisation(80.0, 69), 80.0);
        assert_eq!(f.in_service(70), 2);
        assert_eq!(f.utilisation(80.0, 70), 40.0);
    }

    #[test]
    fn utilisation_is_capped_at_100_and_is_100_with_nothing_serving() {
        let mut f = Fleet::new(params(0.0), 2, 0);
        assert_eq!(f.utilisation(500.0, 0), 100.0);
        f.resize(0, 0);
        assert_eq!(f.utilisation(1.0, 0), 100.0);
        assert_eq!(f.utilisation(0.0, 0), 0.0);
    }

    #[test]
    fn scale_in_removes_booting_instances_first_then_the_oldest() {
        let mut f = Fleet::new(params(0.0), 2, 0); // ids 0, 1
        f.resize(4, 100); // ids 2, 3 boot until 160
        f.resize(3, 120);
        assert_eq!(
            f.instances.iter().map(|i| i.id).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        f.resize(1, 200);
        assert_eq!(f.instances.iter().map(|i| i.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn noise_is_deterministic_from_the_seed_and_spreads_values() {
        let run = |seed| {
            let mut f = Fleet::new(
                ModelParams {
                    seed,
                    ..params(0.05)
                },
                3,
                0,
            );
            (0..5)
                .flat_map(|t| f.samples(150.0, t))
                .map(|s| s.2)
                .collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        assert!(a.iter().any(|v| (v - 50.0).abs() > 0.01), "{a:?}");
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((mean - 50.0).abs() < 5.0, "{mean}");
        let mut quiet = Fleet::new(params(0.0), 3, 0);
        assert!(quiet.samples(150.0, 0).iter().all(|s| s.2 == 50.0));
    }
}
