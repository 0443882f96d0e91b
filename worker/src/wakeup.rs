//! The wake-up protocol, whole: when an idle worker says it waits, how a
//! NOTIFY wakes it, and how NOTIFYs are paced.
//!
//! - **The flag** (`postbox.wakeup.waiting`): emitters NOTIFY only while it
//!   is set, so a busy worker costs them nothing. The worker sets it when a
//!   claim finds nothing, then claims once more (an event committed before
//!   the flag was visible would otherwise wait for the poll; one that read
//!   the flag down and commits after that look still does, see
//!   docs/design.md), and clears it the moment it wakes.
//! - **The LISTEN connection** ([`listen`]): a NOTIFY is only a hint; the
//!   worker also polls. It reconnects with backoff, and wakes the worker
//!   after each (re)connect, as NOTIFYs may have been missed meanwhile.
//! - **Re-arming**: after a NOTIFY that brought nothing claimable (new work
//!   for endpoints at their limit), the flag stays down for a while, doubling
//!   from [`REARM_MIN`] up to half the poll interval, so a stream of such
//!   emits does not pay a NOTIFY each.
//! - **Pacing** ([`NotifyPacer`]): any role may NOTIFY, so a NOTIFY forces at
//!   most one claim per [`NOTIFY_GAP`]; the rest are folded into it.
//! - **A pooler without sessions** ([`session_kept`]): behind a pooler in
//!   transaction mode (PgBouncer, Supavisor, RDS Proxy) a LISTEN is left on
//!   a server connection the worker no longer holds. The LISTEN connection
//!   checks every [`LISTEN_CHECK`] that it still talks to the backend that
//!   listens; when not, it warns once, sets the `listen_polling` metric and
//!   stops: the worker then finds work by polling alone.
//!
//! [`Wakeup`] is the state machine, clock-free (the caller passes the time);
//! the dispatcher drives it and does what it says.

use crate::backoff::Backoff;
use crate::claim::ClaimError;
use deadpool_postgres::{Client, Pool};
use postbox_runtime::tls::MakeRustls;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

/// The channel emitters NOTIFY (see sql/schema.sql).
pub const CHANNEL: &str = "postbox_wakeup";

/// Any role may NOTIFY postbox_wakeup, so a NOTIFY forces at most one claim
/// per this gap; the rest are folded into it. A real emit NOTIFYs only when
/// the worker has said it waits, so it is delayed by this at most; a flood
/// costs at most 200 claim cycles a second, not one per NOTIFY.
pub const NOTIFY_GAP: Duration = Duration::from_millis(5);

/// The first wait before setting the flag again after a NOTIFY that brought
/// nothing claimable: one claim gap (`schedule::CLAIM_GAP`), in which a busy
/// worker would have looked anyway. It doubles up to half the poll interval.
pub const REARM_MIN: Duration = crate::schedule::CLAIM_GAP;

/// How often the LISTEN connection checks that its session is still the
/// one that listens (see [`session_kept`]).
pub const LISTEN_CHECK: Duration = Duration::from_secs(5);

/// Whether a LISTEN still holds: the connection reaches the backend that ran
/// it (`pid`, which a session keeps for its life), and that backend listens
/// on [`CHANNEL`]. A pooler in transaction mode hands the next statement to
/// whichever server connection is free.
pub fn session_kept(listened_on: i32, pid: i32, listening: bool) -> bool {
    pid == listened_on && listening
}

/// The LISTEN connection's reconnect backoff.
const LISTEN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// What a claim cycle found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Claimed and started work.
    Started,
    /// Nothing claimable right now.
    Nothing,
    /// Too little free room to be worth a claim.
    Full,
}

/// What the dispatcher does after a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Claim again at once.
    Claim,
    /// Set the flag, then ask [`Wakeup::armed`].
    Arm,
    /// Wait for a NOTIFY, a completion or the deadline.
    Wait,
}

/// Why a wait's timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The deadline: clear the flag and look again.
    Deadline,
    /// A NOTIFY that had to wait for its turn may act now.
    Notify,
}

/// Paces what NOTIFYs can cause (see [`NOTIFY_GAP`]). Plain and clock-free:
/// the caller passes the time.
#[derive(Debug, Default)]
pub struct NotifyPacer {
    /// When a NOTIFY last forced a claim.
    last: Option<Instant>,
    /// A NOTIFY arrived that has not forced a claim yet.
    pending: bool,
}

impl NotifyPacer {
    pub fn notified(&mut self) {
        self.pending = true;
    }

    /// When the pending NOTIFY may act; None if none is pending.
    pub fn due_at(&self, now: Instant) -> Option<Instant> {
        self.pending
            .then(|| self.last.map_or(now, |l| (l + NOTIFY_GAP).max(now)))
    }

    /// Whether a pending NOTIFY may act at `now`.
    fn is_due(&self, now: Instant) -> bool {
        self.due_at(now).is_some_and(|at| at <= now)
    }

    /// Whether a pending NOTIFY forces a claim at `now`; if so it is used up.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.is_due(now) {
            self.pending = false;
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// The wake-up state machine (see the module header).
#[derive(Debug)]
pub struct Wakeup {
    /// Signalled by the LISTEN connection on every NOTIFY.
    notify: Arc<Notify>,
    poll_interval: Duration,
    /// Whether this worker has set the flag (as far as it knows).
    waiting: bool,
    /// Whether it has looked once more since setting the flag.
    rechecked: bool,
    /// The current cycle was forced by a NOTIFY.
    woke_by_notify: bool,
    /// A NOTIFY forces the next claim even while busy (new work).
    forced: bool,
    /// The flag is not set again before this (after fruitless NOTIFYs).
    rearm_at: Instant,
    rearm_backoff: Duration,
    pacer: NotifyPacer,
}

impl Wakeup {
    pub fn new(poll_interval: Duration, now: Instant) -> Wakeup {
        Wakeup {
            notify: Arc::new(Notify::new()),
            poll_interval,
            waiting: false,
            rechecked: false,
            woke_by_notify: false,
            forced: false,
            rearm_at: now,
            rearm_backoff: Duration::ZERO,
            pacer: NotifyPacer::default(),
        }
    }

    /// Starts the LISTEN connection, which signals this state machine.
    pub fn listen(
        &self,
        pg: tokio_postgres::Config,
        tls: MakeRustls,
        polling: prometheus_client::metrics::gauge::Gauge,
        errors: prometheus_client::metrics::counter::Counter,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(listen(pg, tls, self.notify.clone(), polling, errors, stop))
    }

    /// What wakes the loop as a NOTIFY does, for other tasks that found work
    /// (the heartbeat, when it released claims).
    pub fn waker(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Resolves on the next NOTIFY; then call [`Wakeup::on_notify`].
    pub fn notification(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// A cycle begins: a NOTIFY whose turn has come forces its claim.
    pub fn begin(&mut self, now: Instant) {
        if self.pacer.take(now) {
            self.rechecked = false;
            self.woke_by_notify = true;
            self.forced = true;
        }
    }

    /// Whether a NOTIFY forces this cycle's claim.
    pub fn claim_forced(&self) -> bool {
        self.forced
    }

    /// A claim ran: the NOTIFY that forced it is used up.
    pub fn claimed(&mut self) {
        self.forced = false;
    }

    /// Whether this worker has the flag set.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// After a cycle: claim again, set the flag, or wait.
    pub fn after(&mut self, step: Step, now: Instant) -> Next {
        if self.woke_by_notify {
            self.woke_by_notify = false;
            if step == Step::Nothing {
                self.rearm_backoff =
                    (self.rearm_backoff * 2).clamp(REARM_MIN, self.poll_interval / 2);
                self.rearm_at = now + self.rearm_backoff;
            } else {
                self.rearm_backoff = Duration::ZERO;
            }
        }
        match step {
            Step::Started => {
                self.rechecked = false;
                Next::Claim
            }
            Step::Full => Next::Wait,
            Step::Nothing if !self.waiting && now >= self.rearm_at => Next::Arm,
            Step::Nothing => Next::Wait,
        }
    }

    /// The flag was set (`ok`), or could not be: the first time, look once
    /// more; then wait.
    pub fn armed(&mut self, ok: bool) -> Next {
        if ok && !self.rechecked {
            self.rechecked = true;
            Next::Claim
        } else {
            Next::Wait
        }
    }

    /// The latest moment to look again: `deadline`, or sooner while the flag
    /// is down after a fruitless NOTIFY (when it may be set again).
    pub fn deadline(&self, step: Step, deadline: Instant, now: Instant) -> Instant {
        if !self.waiting && step == Step::Nothing && self.rearm_at > now {
            deadline.min(self.rearm_at)
        } else {
            deadline
        }
    }

    /// When the wait's timer must fire: the deadline, or sooner for a NOTIFY
    /// waiting for its turn.
    pub fn sleep_until(&self, deadline: Instant, now: Instant) -> Instant {
        self.pacer
            .due_at(now)
            .map_or(deadline, |at| at.min(deadline))
    }

    /// A NOTIFY arrived (the caller clears the flag first: every emit
    /// NOTIFYs while it is set). Whether it may act now; otherwise the wait
    /// goes on until its turn.
    pub fn on_notify(&mut self, now: Instant) -> bool {
        self.pacer.notified();
        self.pacer.is_due(now)
    }

    /// The wait's timer fired at `now`: the deadline (the caller clears the
    /// flag), a NOTIFY's turn, or neither (wait on).
    pub fn timer(&mut self, deadline: Instant, now: Instant) -> Option<Timer> {
        if now >= deadline {
            self.rechecked = false;
            Some(Timer::Deadline)
        } else if self.pacer.is_due(now) {
            Some(Timer::Notify)
        } else {
            None
        }
    }

    /// Sets or clears the flag, unless it already says so.
    pub async fn set_flag(&mut self, pool: &Pool, waiting: bool) -> Result<(), ClaimError> {
        if self.waiting == waiting {
            return Ok(());
        }
        let db = pool.get().await?;
        set_waiting(&db, waiting).await?;
        self.waiting = waiting;
        Ok(())
    }
}

/// Sets the wake-up flag that tells emitters to NOTIFY (sql/queue.sql:
/// `set_waiting`; the flag's table is in sql/schema.sql).
pub async fn set_waiting(db: &Client, waiting: bool) -> Result<(), ClaimError> {
    let stmt = db.prepare_cached("SELECT postbox.set_waiting($1)").await?;
    db.execute(&stmt, &[&waiting]).await?;
    Ok(())
}

/// The LISTEN connection: signals `wake` on every NOTIFY, and once after
/// each (re)connect. Reconnects with backoff until `stop`. A lost or
/// refused connection counts in `errors` (the database errors): this
/// connection is always open, so every outage shows there, even one that no
/// claim or acknowledgement happened to meet.
pub async fn listen(
    pg: tokio_postgres::Config,
    tls: MakeRustls,
    wake: Arc<Notify>,
    polling: prometheus_client::metrics::gauge::Gauge,
    errors: prometheus_client::metrics::counter::Counter,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = LISTEN_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        match postbox_runtime::tls::connect(&pg, &tls).await {
            Ok((client, mut conn)) => {
                let wake2 = wake.clone();
                let mut pump = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    use futures_util::StreamExt;
                    while let Some(msg) = messages.next().await {
                        match msg {
                            Ok(AsyncMessage::Notification(_)) => wake2.notify_one(),
                            Ok(_) => {}
                            Err(e) => return Some(e),
                        }
                    }
                    None
                });
                // One query string: the LISTEN and the pid come from one backend.
                match backend(&client, &format!("LISTEN {CHANNEL}; ")).await {
                    Ok((pid, _)) => {
                        backoff.reset();
                        tracing::debug!(pid, "listening for {CHANNEL}");
                        wake.notify_one();
                        let mut check = tokio::time::interval(LISTEN_CHECK);
                        check.tick().await;
                        loop {
                            tokio::select! {
                                res = &mut pump => {
                                    let err = res.ok().flatten().map(|e| e.to_string()).unwrap_or_else(|| "closed".into());
                                    errors.inc();
                                    tracing::warn!(error = %err, "LISTEN connection lost; reconnecting");
                                    break;
                                }
                                _ = check.tick() => match backend(&client, "").await {
                                    Ok((now, listening)) if session_kept(pid, now, listening) => {}
                                    Ok(_) => {
                                        pump.abort();
                                        polling.set(1);
                                        tracing::warn!(
                                            "the LISTEN connection goes through a pooler that does not keep sessions (transaction mode): NOTIFY wake-ups cannot arrive, so this worker finds work by polling alone (poll_interval); connect it to the database directly or through a session-mode pooler (docs/managed.md)"
                                        );
                                        return;
                                    }
                                    // The pump sees a lost connection too.
                                    Err(e) => tracing::debug!(error = %e, "LISTEN check failed"),
                                },
                                _ = stop.changed() => { pump.abort(); return; }
                            }
                        }
                    }
                    Err(e) => {
                        pump.abort();
                        errors.inc();
                        tracing::warn!(error = %e, "LISTEN failed");
                    }
                }
            }
            Err(e) => {
                errors.inc();
                tracing::warn!(error = %postbox_runtime::error::pg_message(&e), "LISTEN connection failed; retrying in {:?}", backoff.peek())
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_wait()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs `before` (LISTEN, or nothing) and reads the backend's pid and
/// whether it listens on [`CHANNEL`], in one query string (the simple
/// protocol: no prepared statement for a pooler to lose).
async fn backend(client: &tokio_postgres::Client, before: &str) -> Result<(i32, bool), String> {
    let sql = format!(
        "{before}SELECT pg_catalog.pg_backend_pid(), '{CHANNEL}' = ANY (ARRAY(SELECT pg_catalog.pg_listening_channels()))"
    );
    let messages = client
        .simple_query(&sql)
        .await
        .map_err(|e| postbox_runtime::error::pg_message(&e))?;
    for m in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
            let pid = row.get(0).and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                return Ok((pid, row.get(1) == Some("t")));
            }
        }
    }
    Err("no answer to the LISTEN check".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(2);

    #[test]
    fn a_listen_holds_only_on_the_backend_that_listens() {
        assert!(session_kept(41, 41, true));
        assert!(
            !session_kept(41, 42, true),
            "another backend: a pooler moved the session"
        );
        assert!(
            !session_kept(41, 41, false),
            "the same pid no longer listening"
        );
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_notify_forces_at_most_one_claim_per_gap() {
        let t0 = Instant::now();
        let ms = |n: u64| ms(t0, n);
        let mut p = NotifyPacer::default();
        assert!(!p.take(t0), "nothing pending, nothing forced");
        assert_eq!(p.due_at(t0), None);
        p.notified();
        assert_eq!(p.due_at(t0), Some(t0), "the first NOTIFY acts at once");
        assert!(p.take(t0));
        assert!(!p.take(t0), "used up");
        // A flood right after: folded into one claim, NOTIFY_GAP after the last.
        for n in 0..1000 {
            p.notified();
            assert!(!p.take(t0 + Duration::from_micros(n)), "{n}");
        }
        assert_eq!(p.due_at(ms(1)), Some(t0 + NOTIFY_GAP));
        assert!(!p.take(t0 + NOTIFY_GAP - Duration::from_micros(1)));
        assert!(p.take(t0 + NOTIFY_GAP));
        assert!(
            !p.take(ms(100)),
            "the flood forced one claim, not a thousand"
        );
        // Long after the last: at once again.
        p.notified();
        assert_eq!(p.due_at(ms(100)), Some(ms(100)));
        assert!(p.take(ms(100)));
        // Over a second of NOTIFYs every 100 µs: at most one claim per gap.
        let mut forced = 0;
        for n in 0..10_000u64 {
            let now = ms(200) + Duration::from_micros(100 * n);
            p.notified();
            if p.take(now) {
                forced += 1;
            }
        }
        let most = (Duration::from_secs(1).as_micros() / NOTIFY_GAP.as_micros()) as usize + 1;
        assert!(
            forced <= most && forced >= most - 2,
            "{forced} claims for 10,000 NOTIFYs"
        );
    }

    #[test]
    fn an_idle_worker_sets_the_flag_then_looks_once_more() {
        let t0 = Instant::now();
        let mut w = Wakeup::new(POLL, t0);
        w.begin(t0);
        assert!(!w.claim_forced());
        assert_eq!(
            w.after(Step::Nothing, t0),
            Next::Arm,
            "nothing: say it waits"
        );
        assert_eq!(w.armed(true), Next::Claim, "then look once more");
        w.waiting = true; // what set_flag(true) records
        w.begin(t0);
        assert_eq!(
            w.after(Step::Nothing, t0),
            Next::Wait,
            "still nothing: wait"
        );
        assert_eq!(w.deadline(Step::Nothing, ms(t0, 2000), t0), ms(t0, 2000));
        assert_eq!(w.sleep_until(ms(t0, 2000), t0), ms(t0, 2000));
        // The poll deadline: clear the flag, and set it (and recheck) again.
        assert_eq!(w.timer(ms(t0, 2000), ms(t0, 1999)), None);
        assert_eq!(w.timer(ms(t0, 2000), ms(t0, 2000)), Some(Timer::Deadline));
        w.waiting = false;
        assert_eq!(w.after(Step::Nothing, ms(t0, 2000)), Next::Arm);
        assert_eq!(w.armed(true), Next::Claim);
        // A failed flag write: no recheck loop, just wait (and poll).
        let mut w = Wakeup::new(POLL, t0);
        assert_eq!(w.after(Step::Nothing, t0), Next::Arm);
        assert_eq!(w.armed(false), Next::Wait);
    }

    #[test]
    fn one_recheck_per_wake_up() {
        let t0 = Instant::now();
        let mut w = Wakeup::new(POLL, t0);
        assert_eq!(w.after(Step::Nothing, t0), Next::Arm);
        assert_eq!(w.armed(true), Next::Claim);
        w.waiting = true;
        // A NOTIFY that must wait its turn clears the flag; a completion
        // ends the wait first, and the cycle finds nothing.
        w.waiting = false;
        w.begin(t0);
        assert_eq!(
            w.after(Step::Nothing, t0),
            Next::Arm,
            "the flag goes up again"
        );
        assert_eq!(w.armed(true), Next::Wait, "without a second recheck");
    }

    #[test]
    fn work_found_means_claim_again_and_recheck_anew() {
        let t0 = Instant::now();
        let mut w = Wakeup::new(POLL, t0);
        assert_eq!(w.after(Step::Nothing, t0), Next::Arm);
        assert_eq!(w.armed(true), Next::Claim);
        assert_eq!(w.after(Step::Started, t0), Next::Claim);
        assert_eq!(w.after(Step::Full, t0), Next::Wait, "full: wait for room");
        assert_eq!(w.after(Step::Nothing, t0), Next::Arm);
        assert_eq!(w.armed(true), Next::Claim, "a new recheck after work");
    }

    #[test]
    fn a_notify_wakes_at_once_and_forces_one_claim() {
        let t0 = Instant::now();
        let mut w = Wakeup::new(POLL, t0);
        w.waiting = true;
        assert!(w.on_notify(ms(t0, 7)), "the first NOTIFY acts at once");
        w.waiting = false; // the caller cleared the flag
        w.begin(ms(t0, 7));
        assert!(w.claim_forced());
        w.claimed();
        assert!(!w.claim_forced(), "used up by the claim");
        // Another right after must wait its turn; the timer says when.
        assert!(!w.on_notify(ms(t0, 8)));
        assert_eq!(
            w.sleep_until(ms(t0, 2000), ms(t0, 8)),
            ms(t0, 7) + NOTIFY_GAP
        );
        assert_eq!(w.timer(ms(t0, 2000), ms(t0, 12)), Some(Timer::Notify));
        w.begin(ms(t0, 12));
        assert!(w.claim_forced());
    }

    #[test]
    fn fruitless_notifies_keep_the_flag_down_with_backoff() {
        let t0 = Instant::now();
        let mut w = Wakeup::new(POLL, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert!(w.on_notify(now));
            w.begin(now);
            assert_eq!(
                w.after(Step::Nothing, now),
                Next::Wait,
                "not re-armed at once"
            );
            let until = w.deadline(Step::Nothing, now + POLL, now);
            waits.push(until - now);
            now = until + NOTIFY_GAP;
        }
        let ms = Duration::from_millis;
        assert_eq!(
            waits,
            [
                ms(10),
                ms(20),
                ms(40),
                ms(80),
                ms(160),
                ms(320),
                ms(640),
                ms(1000),
                ms(1000),
                ms(1000)
            ],
            "from REARM_MIN, doubling, up to half the poll interval"
        );
        // Past the re-arm time, with no NOTIFY: the flag goes up again.
        assert_eq!(w.after(Step::Nothing, now), Next::Arm);
        // A NOTIFY that finds work resets the backoff.
        assert!(w.on_notify(now));
        w.begin(now);
        assert_eq!(w.after(Step::Started, now), Next::Claim);
        assert!(w.on_notify(now + NOTIFY_GAP));
        w.begin(now + NOTIFY_GAP);
        w.after(Step::Nothing, now + NOTIFY_GAP);
        assert_eq!(
            w.deadline(Step::Nothing, now + POLL, now + NOTIFY_GAP),
            now + NOTIFY_GAP + REARM_MIN
        );
    }
}
