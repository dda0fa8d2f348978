//! Target agents (the hosts of load balancers and databases): the desired
//! state each must hold, versioned, and what each last reported. The engine
//! sets the desired state on every pass; a target's stream sends it
//! whenever it changes; the engine reads the reports to decide when an
//! instance is registered, drained or deregistered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ebb_proto::v1::{AllowList, LoadBalancerMembers, MemberReport, TargetReport, TargetState};
use tokio::sync::watch;

/// Everything ebb wants of one target, without its version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub load_balancers: Vec<LoadBalancerMembers>,
    pub allow_lists: Vec<AllowList>,
}

impl Desired {
    pub fn is_empty(&self) -> bool {
        self.load_balancers.is_empty() && self.allow_lists.is_empty()
    }
}

struct Entry {
    desired: Desired,
    version: u64,
    tx: watch::Sender<Arc<TargetState>>,
    /// The stream holding it, if one is open.
    session: Option<u64>,
    report: Option<TargetReport>,
    /// Its stream was closed by the controller (revoked), not superseded.
    closed: bool,
}

/// The registry of targets.
pub struct Targets {
    entries: Mutex<HashMap<String, Entry>>,
    /// Versions grow across restarts: the first is the start time in ms.
    next_version: AtomicU64,
    /// The engine has set the desired states once: until then a target
    /// that connects is sent nothing (an empty state would make it delete
    /// every server it holds, right after a controller restart).
    published: std::sync::atomic::AtomicBool,
    next_session: AtomicU64,
}

/// What the API shows of one attachment on its target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentStatus {
    pub connected: bool,
    /// The target's error for the whole attachment, or why it has none to
    /// report (not connected).
    pub error: String,
}

/// What a target last said of one member.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberView {
    pub connected: bool,
    /// The target has applied the current desired state (its report's
    /// version is the latest sent).
    pub caught_up: bool,
    /// The attachment's error, if the target reported one.
    pub attachment_error: String,
    /// The member as the target holds it now; None: it holds no such member.
    pub member: Option<MemberReport>,
}

impl MemberView {
    /// Why the member is not as wanted yet, for an activity's record.
    pub fn why_not(&self) -> String {
        if !self.connected {
            return "its target agent is not connected".to_owned();
        }
        if !self.attachment_error.is_empty() {
            return self.attachment_error.clone();
        }
        match &self.member {
            Some(m) if !m.error.is_empty() => m.error.clone(),
            Some(m) if m.up == Some(false) => "HAProxy's health check reports it DOWN".to_owned(),
            Some(_) if !self.caught_up => "the target has not applied the latest state".to_owned(),
            Some(_) => "it is not yet in the wanted state".to_owned(),
            None => "the target does not hold it yet".to_owned(),
        }
    }
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = lock(&self.entries);
        let mut names: Vec<&String> = entries.keys().collect();
        names.sort();
        f.debug_struct("Targets").field("targets", &names).finish()
    }
}

fn lock(m: &Mutex<HashMap<String, Entry>>) -> MutexGuard<'_, HashMap<String, Entry>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Targets {
    /// A registry whose first version is `first_version` (the start time in
    /// ms, so a restarted controller sends versions above its old ones).
    pub fn new(first_version: u64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            next_version: AtomicU64::new(first_version.max(1)),
            published: std::sync::atomic::AtomicBool::new(false),
            next_session: AtomicU64::new(1),
        }
    }

    fn entry(&self, version: u64) -> Entry {
        let (tx, _) = watch::channel(Arc::new(TargetState {
            version,
            ..Default::default()
        }));
        Entry {
            desired: Desired::default(),
            version,
            tx,
            session: None,
            report: None,
            closed: false,
        }
    }

    /// Sets every target's desired state: `all` names each target with
    /// anything to hold; a target not named holds nothing. A target whose
    /// state changed gets a new version, sent to its stream.
    pub fn set_desired(&self, mut all: HashMap<String, Desired>) {
        let mut entries = lock(&self.entries);
        for (name, entry) in entries.iter_mut() {
            let desired = all.remove(name).unwrap_or_default();
            if desired != entry.desired {
                self.publish(entry, desired);
            }
        }
        for (name, desired) in all {
            let mut entry = self.entry(0);
            self.publish(&mut entry, desired);
            entries.insert(name, entry);
        }
        // A target with nothing to hold and no stream is forgotten.
        entries.retain(|_, e| e.session.is_some() || !e.desired.is_empty());
        // Targets connected before the first pass are told now, even of
        // an empty state.
        if !self.published.swap(true, Ordering::SeqCst) {
            for e in entries.values() {
                e.tx.send_modify(|_| {});
            }
        }
    }

    fn publish(&self, entry: &mut Entry, desired: Desired) {
        entry.version = self.next_version.fetch_add(1, Ordering::Relaxed);
        entry.desired = desired;
        entry.tx.send_replace(Arc::new(TargetState {
            version: entry.version,
            load_balancers: entry.desired.load_balancers.clone(),
            allow_lists: entry.desired.allow_lists.clone(),
        }));
    }

    /// Registers a target's new stream (a previous one of the same target
    /// is superseded: its reports are no longer taken). Returns the
    /// session and the desired state to follow.
    pub fn connect(&self, name: &str) -> (u64, watch::Receiver<Arc<TargetState>>) {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut entries = lock(&self.entries);
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let entry = entries
            .entry(name.to_owned())
            .or_insert_with(|| self.entry(version));
        entry.session = Some(session);
        entry.report = None;
        entry.closed = false;
        let mut rx = entry.tx.subscribe();
        if self.published.load(Ordering::SeqCst) {
            rx.mark_changed();
        }
        (session, rx)
    }

    /// Whether `session` is still the target's current stream.
    pub fn is_current(&self, name: &str, session: u64) -> bool {
        lock(&self.entries)
            .get(name)
            .is_some_and(|e| e.session == Some(session))
    }

    /// Takes a report from the target's current stream; false when the
    /// session was superseded.
    pub fn report(&self, name: &str, session: u64, report: TargetReport) -> bool {
        let mut entries = lock(&self.entries);
        match entries.get_mut(name) {
            Some(e) if e.session == Some(session) => {
                e.report = Some(report);
                true
            }
            _ => false,
        }
    }

    pub fn disconnect(&self, name: &str, session: u64) {
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get_mut(name)
            && e.session == Some(session)
        {
            e.session = None;
            e.report = None;
        }
    }

    /// Ends the target's stream (its identity was revoked): it is no longer
    /// current, and its task, woken, ends it. True if one was open.
    pub fn close(&self, name: &str) -> bool {
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(name) else {
            return false;
        };
        let open = e.session.take().is_some();
        e.report = None;
        e.closed = true;
        e.tx.send_modify(|_| {});
        open
    }

    /// Whether the controller closed the target's stream (see [`Self::close`]).
    pub fn was_closed(&self, name: &str) -> bool {
        lock(&self.entries).get(name).is_some_and(|e| e.closed)
    }

    pub fn is_connected(&self, name: &str) -> bool {
        lock(&self.entries)
            .get(name)
            .is_some_and(|e| e.session.is_some())
    }

    /// The attachment's status on its target, for the API.
    pub fn attachment(&self, target: &str, attachment_id: &str) -> AttachmentStatus {
        let entries = lock(&self.entries);
        let Some(e) = entries.get(target).filter(|e| e.session.is_some()) else {
            return AttachmentStatus {
                connected: false,
                error: format!("target agent `{target}` is not connected"),
            };
        };
        let error = e
            .report
            .as_ref()
            .and_then(|r| {
                r.attachments
                    .iter()
                    .find(|a| a.attachment_id == attachment_id)
            })
            .map(|a| a.error.clone())
            .unwrap_or_default();
        AttachmentStatus {
            connected: true,
            error,
        }
    }

    /// What the target last reported of `instance_id` in the attachment.
    pub fn member(&self, target: &str, attachment_id: &str, instance_id: &str) -> MemberView {
        let entries = lock(&self.entries);
        let Some(e) = entries.get(target).filter(|e| e.session.is_some()) else {
            return MemberView::default();
        };
        let Some(report) = &e.report else {
            return MemberView {
                connected: true,
                ..Default::default()
            };
        };
        let attachment = report
            .attachments
            .iter()
            .find(|a| a.attachment_id == attachment_id);
        MemberView {
            connected: true,
            caught_up: report.version >= e.version,
            attachment_error: attachment.map(|a| a.error.clone()).unwrap_or_default(),
            member: attachment
                .and_then(|a| a.members.iter().find(|m| m.instance_id == instance_id))
                .cloned(),
        }
    }

    /// Whether the target reports the attachment with no members left, at
    /// the latest version (a detached load balancer may then be dropped).
    pub fn emptied(&self, target: &str, attachment_id: &str) -> bool {
        let entries = lock(&self.entries);
        let Some(e) = entries.get(target) else {
            return false;
        };
        e.report.as_ref().is_some_and(|r| {
            r.version >= e.version
                && r.attachments
                    .iter()
                    .find(|a| a.attachment_id == attachment_id)
                    .is_none_or(|a| a.members.is_empty() && a.error.is_empty())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_proto::v1::{AttachmentReport, Member, MemberState};

    fn lb(members: &[&str]) -> Desired {
        Desired {
            load_balancers: vec![LoadBalancerMembers {
                attachment_id: "asg-1/web".into(),
                backend: "web".into(),
                members: members
                    .iter()
                    .map(|id| Member {
                        instance_id: (*id).into(),
                        address: "10.0.0.2".into(),
                        port: 80,
                        weight: 1,
                        state: MemberState::Ready as i32,
                    })
                    .collect(),
            }],
            allow_lists: vec![],
        }
    }

    fn report(version: u64, members: &[&str]) -> TargetReport {
        TargetReport {
            version,
            attachments: vec![AttachmentReport {
                attachment_id: "asg-1/web".into(),
                error: String::new(),
                members: members
                    .iter()
                    .map(|id| MemberReport {
                        instance_id: (*id).into(),
                        state: MemberState::Ready as i32,
                        ..Default::default()
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_change_gets_a_new_version_and_an_unchanged_state_keeps_its_own() {
        let t = Targets::new(1000);
        t.set_desired(HashMap::from([("lb1".to_owned(), lb(&["i-1"]))]));
        let (session, mut rx) = t.connect("lb1");
        let first = rx.borrow_and_update().version;
        assert!(first >= 1000);
        assert_eq!(rx.borrow().load_balancers[0].members.len(), 1);
        t.set_desired(HashMap::from([("lb1".to_owned(), lb(&["i-1"]))]));
        assert!(
            !rx.has_changed().unwrap(),
            "an unchanged state was sent again"
        );
        t.set_desired(HashMap::from([("lb1".to_owned(), lb(&["i-1", "i-2"]))]));
        assert!(rx.has_changed().unwrap());
        let second = rx.borrow_and_update().version;
        assert!(second > first);
        // A report of the older version is not caught up.
        assert!(t.report("lb1", session, report(first, &["i-1"])));
        let v = t.member("lb1", "asg-1/web", "i-1");
        assert!(v.connected && !v.caught_up && v.member.is_some());
        assert!(t.report("lb1", session, report(second, &["i-1", "i-2"])));
        assert!(t.member("lb1", "asg-1/web", "i-2").caught_up);
        // Nothing left to hold: the target is told so, with a new version.
        t.set_desired(HashMap::new());
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().load_balancers.is_empty());
        assert!(!t.emptied("lb1", "asg-1/web"));
        let third = rx.borrow().version;
        assert!(t.report("lb1", session, report(third, &[])));
        assert!(t.emptied("lb1", "asg-1/web"));
    }

    #[test]
    fn nothing_is_sent_before_the_first_pass_then_even_an_empty_state_is() {
        // A restarted controller: the targets reconnect before its first
        // pass has computed anything. An empty state now would make them
        // delete every server they hold.
        let t = Targets::new(1);
        let (_, lb_rx) = t.connect("lb1");
        let (_, idle_rx) = t.connect("idle");
        assert!(!lb_rx.has_changed().unwrap());
        assert!(!idle_rx.has_changed().unwrap());
        t.set_desired(HashMap::from([("lb1".to_owned(), lb(&["i-1"]))]));
        assert!(lb_rx.has_changed().unwrap());
        assert_eq!(lb_rx.borrow().load_balancers[0].members.len(), 1);
        // A target with nothing to hold is told so, once the pass has run.
        assert!(idle_rx.has_changed().unwrap());
        assert!(idle_rx.borrow().load_balancers.is_empty());
        // From then on a new stream gets the state at once.
        let (_, again) = t.connect("lb1");
        assert!(again.has_changed().unwrap());
    }

    #[test]
    fn a_superseded_stream_cannot_report_and_a_disconnect_forgets_the_report() {
        let t = Targets::new(1);
        let (old, _) = t.connect("pg1");
        let (new, _) = t.connect("pg1");
        assert!(!t.report("pg1", old, report(1, &["i-1"])));
        assert!(t.report("pg1", new, report(1, &["i-1"])));
        t.disconnect("pg1", old);
        assert!(t.is_connected("pg1"));
        t.disconnect("pg1", new);
        assert!(!t.is_connected("pg1"));
        let v = t.member("pg1", "asg-1/web", "i-1");
        assert_eq!(v, MemberView::default());
        assert_eq!(v.why_not(), "its target agent is not connected");
        assert!(!t.attachment("pg1", "asg-1/web").connected);
    }
}
