//! The alarm and schedule loop: both passes at every tick of the clock, the
//! pruning of old activities and rollups once a minute, and predictive
//! scaling's rollup and floor passes once a minute.

use crate::engine::Engine;
use crate::engine::alarms::evaluate_alarms;
use crate::engine::predictive;
use crate::engine::schedules::run_due_tasks;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How often the alarm and schedule loops look at the clock.
const LOOP_TICK: Duration = Duration::from_millis(200);

/// Evaluates alarms and runs due scheduled tasks until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(LOOP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let result = match evaluate_alarms(&engine).await {
            Ok(()) => run_due_tasks(&engine).await,
            Err(e) => Err(e),
        };
        // Retention rides on the same tick; it does its work once a minute.
        let result = match result {
            Ok(()) => engine.prune_activities().await.map(|_| ()),
            Err(e) => Err(e),
        };
        // Predictive scaling: the minute just finished, then the floors.
        let result = match result {
            Ok(()) => match predictive::roll_up(&engine).await {
                Ok(_) => predictive::predictive_pass(&engine).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                super::Passes::mark(&engine.passes.alarms);
                last_error = None;
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    warn!("alarms and schedules: {text}");
                }
                last_error = Some(text);
            }
        }
    }
}
