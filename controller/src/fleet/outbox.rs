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

/// Script results kept for the engine to pick up. Each answers a script
/// sent to its instance, so this bounds results nobody collected (their
/// actions were decided another way); past it, new ones are dropped.
const MAX_PENDING_RESULTS: usize = 4096;

/// The most of a script's output (and of its error) kept: its tail, as
/// the agent sends it.
pub const MAX_RESULT_OUTPUT: usize = 4096;

/// Why [`Outbox::finished`] dropped a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its token is not an open action sent to the sending instance.
    NotSent,
    /// [`MAX_PENDING_RESULTS`] are waiting already.
    TooMany,
}

/// The way to each connected agent's stream, and the hook results that came
/// back on them.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Instance id → (stream's session number, its outbound queue).
    agents: DashMap<String, (u64, Outbound)>,
    /// Lifecycle action token → the instance its script was sent to, until
    /// the engine takes the answer or the instance is forgotten.
    sent: DashMap<String, String>,
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
        let token = run.token.clone();
        // Noted before the send: a refusal comes back at once, and must
        // find its token here however the threads are scheduled.
        let fresh = self
            .sent
            .insert(token.clone(), instance.to_owned())
            .is_none();
        let sent = entry
            .1
            .try_send(message(ControllerBody::RunHook(run)))
            .is_ok();
        if !sent && fresh {
            self.sent.remove(&token);
        }
        sent
    }

    /// `instance`'s agent answered: kept for the engine when its token is
    /// an open action whose script was sent to that instance, with its
    /// output cut to the last [`MAX_RESULT_OUTPUT`] bytes.
    pub fn finished(&self, instance: &str, mut result: pb::HookResult) -> Result<(), Dropped> {
        if self
            .sent
            .get(&result.token)
            .is_none_or(|to| *to != instance)
        {
            return Err(Dropped::NotSent);
        }
        if self.results.len() >= MAX_PENDING_RESULTS && !self.results.contains_key(&result.token) {
            warn!(
                "{} hook results nobody collected; dropping the new one",
                self.results.len()
            );
            return Err(Dropped::TooMany);
        }
        tail(&mut result.output, MAX_RESULT_OUTPUT);
        tail(&mut result.error, MAX_RESULT_OUTPUT);
        self.results.insert(result.token.clone(), result);
        Ok(())
    }

    /// The answer for `token`, once it came; taking it closes the action.
    pub fn take(&self, token: &str) -> Option<pb::HookResult> {
        let (_, result) = self.results.remove(token)?;
        self.sent.remove(token);
        Some(result)
    }

    /// The action was decided another way: an answer, now or later, is
    /// nobody's.
    pub fn discard(&self, token: &str) {
        self.sent.remove(token);
        self.results.remove(token);
    }

    /// An instance left for good: its actions' answers are nobody's.
    pub fn forget(&self, instance: &str) {
        let mut tokens = Vec::new();
        self.sent.retain(|token, to| {
            let mine = to == instance;
            if mine {
                tokens.push(token.clone());
            }
            !mine
        });
        for t in tokens {
            self.results.remove(&t);
        }
    }
}

/// Keeps the last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &mut String, max: usize) {
    if s.len() > max {
        let mut start = s.len() - max;
        while !s.is_char_boundary(start) {
            start += 1;
        }
        s.drain(..start);
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

    fn run(token: &str) -> pb::RunHook {
        pb::RunHook {
            token: token.into(),
            ..Default::default()
        }
    }

    #[test]
    fn results_are_taken_once_and_a_closed_stream_gets_nothing() {
        let outbox = Outbox::default();
        let (tx, mut rx) = mpsc::channel(4);
        outbox.open("i-1", 1, tx.clone());
        assert!(outbox.send("i-1", run("lat-1")));
        assert_eq!(outbox.finished("i-1", answer(Some(0), "", "")), Ok(()));
        assert!(outbox.take("lat-1").is_some());
        assert!(outbox.take("lat-1").is_none());
        // Once taken, the action is closed: a repeat is refused.
        assert_eq!(
            outbox.finished("i-1", answer(Some(0), "", "")),
            Err(Dropped::NotSent)
        );
        outbox.close("i-1", 1);
        while rx.try_recv().is_ok() {}

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

    /// DESIGN §3: an instance answers only for scripts sent to it, and its
    /// output is capped; one instance cannot drop another's results.
    #[test]
    fn a_result_is_kept_only_from_the_instance_its_script_went_to() {
        let outbox = Outbox::default();
        let (tx1, _rx1) = mpsc::channel(4);
        let (tx2, _rx2) = mpsc::channel(4);
        outbox.open("i-1", 1, tx1);
        outbox.open("i-2", 1, tx2);
        assert!(outbox.send("i-1", run("lat-1")));
        assert!(outbox.send("i-2", run("lat-2")));
        // i-2 answers for i-1's action, and for one never sent.
        assert_eq!(
            outbox.finished("i-2", answer(Some(1), "", "")),
            Err(Dropped::NotSent)
        );
        let mut unknown = answer(Some(0), "", "");
        unknown.token = "lat-9".into();
        assert_eq!(outbox.finished("i-2", unknown), Err(Dropped::NotSent));
        assert!(outbox.take("lat-1").is_none(), "nothing stored for lat-1");
        // Looking for an answer before it came keeps the action open.
        assert_eq!(outbox.finished("i-1", answer(Some(0), "", "early")), Ok(()));
        assert_eq!(outbox.take("lat-1").unwrap().output, "early");
        // i-1's own answer, with a huge output, is kept with its tail.
        assert!(outbox.send("i-1", run("lat-1")));
        assert!(outbox.take("lat-1").is_none());
        let long = format!(
            "{}é{}",
            "x".repeat(10_000),
            "y".repeat(MAX_RESULT_OUTPUT - 1)
        );
        assert_eq!(outbox.finished("i-1", answer(Some(0), "", &long)), Ok(()));
        let mut two = answer(Some(0), "", "mine");
        two.token = "lat-2".into();
        assert_eq!(outbox.finished("i-2", two), Ok(()));
        let kept = outbox.take("lat-1").unwrap();
        assert!(kept.output.len() <= MAX_RESULT_OUTPUT);
        assert!(kept.output.ends_with('y') && kept.output.starts_with('y'));
        // A discarded action takes no answer.
        assert!(outbox.send("i-1", run("lat-4")));
        outbox.discard("lat-4");
        let mut late = answer(Some(0), "", "");
        late.token = "lat-4".into();
        assert_eq!(outbox.finished("i-1", late), Err(Dropped::NotSent));
        // Forgetting i-1 leaves i-2's pending result alone.
        assert!(outbox.send("i-1", run("lat-3")));
        outbox.forget("i-1");
        assert_eq!(outbox.take("lat-2").unwrap().output, "mine");
    }
}
