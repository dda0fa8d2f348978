//! Lifecycle hook scripts on their way to an instance's agent and their
//! results on the way back, over the instance's stream.

use dashmap::DashMap;
use ebb_proto::v1 as pb;
use ebb_proto::v1::ControllerMessage;
use ebb_proto::v1::controller_message::Body as ControllerBody;
use tokio::sync::mpsc;
use tracing::warn;

/// The queue of messages to one agent, fed by its stream's task and the
/// lifecycle outbox. Boxed: the queue's blocks are 32 slots each, kept as long
/// as the stream, and a slot of `Result<ControllerMessage, Status>` is about
/// 200 bytes (10 KB an agent, 100 MB at 10,000); a box is 8.
pub type Outbound = mpsc::Sender<Box<ControllerMessage>>;

pub(crate) fn message(body: ControllerBody) -> Box<ControllerMessage> {
    Box::new(ControllerMessage { body: Some(body) })
}

/// Script results kept for the engine to pick up; more means results nobody
/// is waiting for any more (their actions were decided another way).
const MAX_PENDING_RESULTS: usize = 4096;

/// The way to each connected agent's stream, and the hook results that came
/// back on them.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Instance id → (stream's session number, its outbound queue).
    agents: DashMap<String, (u64, Outbound)>,
    /// Lifecycle action token → the agent's answer.
    results: DashMap<String, pb::HookResult>,
}

impl Outbox {
    /// A stream opened: hook scripts for the instance go to it.
    pub fn open(&self, instance: &str, session: u64, tx: Outbound) {
        self.agents.insert(instance.to_owned(), (session, tx));
    }

    /// A stream ended; a newer stream of the same instance stays.
    pub fn close(&self, instance: &str, session: u64) {
        self.agents.remove_if(instance, |_, (s, _)| *s == session);
    }

    /// Hands a script to the instance's agent; false when it has no stream
    /// or its queue is full (the engine tries again on its next pass).
    pub fn send(&self, instance: &str, run: pb::RunHook) -> bool {
        let Some(entry) = self.agents.get(instance) else {
            return false;
        };
        entry
            .1
            .try_send(message(ControllerBody::RunHook(run)))
            .is_ok()
    }

    /// An agent's answer arrived.
    pub fn finished(&self, result: pb::HookResult) {
        if self.results.len() >= MAX_PENDING_RESULTS {
            warn!(
                "dropping {} hook results nobody collected",
                self.results.len()
            );
            self.results.clear();
        }
        self.results.insert(result.token.clone(), result);
    }

    /// The answer for `token`, once.
    pub fn take(&self, token: &str) -> Option<pb::HookResult> {
        self.results.remove(token).map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    fn answer(exit_code: Option<i32>, error: &str, output: &str) -> pb::HookResult {
        pb::HookResult {
            token: "lat-1".into(),
            exit_code,
            error: error.into(),
            output: output.into(),
            duration_ms: 12,
            refused: false,
        }
    }

    #[test]
    fn results_are_taken_once_and_a_closed_stream_gets_nothing() {
        let outbox = Outbox::default();
        outbox.finished(answer(Some(0), "", ""));
        assert!(outbox.take("lat-1").is_some());
        assert!(outbox.take("lat-1").is_none());

        let (tx, mut rx) = mpsc::channel(1);
        outbox.open("i-1", 1, tx.clone());
        let run = pb::RunHook {
            token: "lat-2".into(),
            ..Default::default()
        };
        assert!(outbox.send("i-1", run.clone()));
        assert!(rx.try_recv().is_ok());
        // A replaced stream's close does not remove its successor.
        outbox.open("i-1", 2, tx);
        outbox.close("i-1", 1);
        assert!(outbox.send("i-1", run.clone()));
        outbox.close("i-1", 2);
        assert!(!outbox.send("i-1", run));
        assert!(!outbox.send("i-2", pb::RunHook::default()));
    }
}
