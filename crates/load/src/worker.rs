//! One load thread: its own poller, its share of the connections, its own buffers and
//! measurements. Nothing is shared with the other threads but the read-only [`Plan`], the stop
//! flag and a few counters published for the progress line.
//!
//! The loop is generic over ringpoll-sys's [`Poller`] trait (epoll one-shot by default): after
//! every event for a connection it reads everything available (recv into one 64 KiB buffer per
//! thread, until a short read), tops the connection up to `--depth` requests in flight (closed
//! loop) or sends what its schedule says is due (open loop), sends all of it in one call, and
//! re-arms. Nothing is allocated per request: requests are sent straight from the shared
//! request buffer or the static echo pattern, and in-flight requests live in a ring allocated
//! once per connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use ringpoll_sys::poller::{Event, Interest, Mode, Poller, Token};
use ringpoll_sys::socket;

use crate::config::Plan;
use crate::conn::{Conn, Lost, State, MAX_BACKOFF, MIN_BACKOFF};
use crate::describe::describe_connect_error;
use crate::stats::{ErrorKind, Recorder, Slot};
use crate::thread::{thread_cpu_us, Live, Msg, ThreadOut, ThreadSpec};

/// Token of the open-loop timer descriptor.
const TIMER: Token = u64::MAX - 2;
/// recv calls per connection event before other connections get their turn.
const READ_BUDGET: usize = 16;
const RX_BUF: usize = 64 * 1024;
/// Request and connect timeouts are checked this often.
const SWEEP_EVERY: u64 = 50_000_000;
/// After Ctrl-C, wait at most this long for requests in flight.
const STOP_GRACE: u64 = 250_000_000;
const SECOND: u64 = 1_000_000_000;

struct Worker<'a, P> {
    plan: &'a Plan,
    poller: P,
    conns: Vec<Conn>,
    rx: Vec<u8>,
    rec: Recorder,
    /// Reconnect and open-loop send timers: (when, connection). Stale entries are skipped.
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    /// Open loop: a timerfd for sub-millisecond wake-ups, and the deadline it is set to.
    timerfd: Option<TimerFd>,
    timerfd_at: u64,
    /// Edge-triggered pollers: connections left readable when their read budget ran out.
    requeue: Vec<(u32, u32)>,
    now: u64,
    end: u64,
    grace_end: u64,
    connected_ever: bool,
    /// `-n`: requests this thread may still send in the window.
    budget: Option<u64>,
    connect_failures: u64,
    last_connect_error: Option<io::Error>,
    first_error: Option<String>,
}

#[inline]
fn token(idx: usize, generation: u32) -> Token {
    (u64::from(generation) << 32) | idx as u64
}

/// Run one load thread until its window and grace period are over.
pub fn run_thread<P: Poller>(
    plan: &Plan,
    spec: ThreadSpec,
    live: &Live,
    stop: &AtomicBool,
    tx: &Sender<Msg>,
) -> io::Result<ThreadOut> {
    if let Some(cpu) = spec.cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            tracing::warn!("could not pin load thread {} to CPU {cpu}", spec.index);
        }
    }
    let poller = P::new().map_err(|e| io::Error::new(e.kind(), format!("creating the {} poller: {e}", P::NAME)))?;
    let mut conns = Vec::with_capacity(spec.active + spec.idle);
    conns.extend((0..spec.active).map(|i| Conn::new(spec.first + i, false, plan)));
    conns.extend((0..spec.idle).map(|i| Conn::new(spec.first_idle + i, true, plan)));
    let mut w = Worker {
        plan,
        poller,
        timers: BinaryHeap::with_capacity(conns.len() * 2),
        conns,
        rx: vec![0; RX_BUF],
        rec: Recorder::new(plan.warm_end, plan.interval_ns.is_some(), plan.timeline),
        timerfd: None,
        timerfd_at: 0,
        requeue: Vec::new(),
        now: plan.now(),
        end: plan.end,
        grace_end: plan.end.saturating_add(plan.grace),
        connected_ever: false,
        budget: spec.budget,
        connect_failures: 0,
        last_connect_error: None,
        first_error: None,
    };
    if plan.interval_ns.is_some() {
        let tfd = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("creating a timerfd: {e}")))?;
        w.poller.add(tfd.as_fd().as_raw_fd(), TIMER, Interest::READ)?;
        w.timerfd = Some(tfd);
        // Default slack is 50 µs; the schedule wants better (best effort).
        let _ = nix::sys::prctl::set_timerslack(1_000);
    }
    for idx in 0..w.conns.len() {
        w.connect(idx);
    }
    w.run(live, stop, tx)
}

impl<P: Poller> Worker<'_, P> {
    fn run(mut self, live: &Live, stop: &AtomicBool, tx: &Sender<Msg>) -> io::Result<ThreadOut> {
        let plan = self.plan;
        let mut events = Vec::with_capacity(1024);
        let mut next_sweep = self.now + SWEEP_EVERY;
        let mut sec = 0u64;
        let mut next_second = plan.warm_end + SECOND;
        let mut cpu_start = if self.rec.measuring { thread_cpu_us() } else { 0 };
        let mut sys_start = ringpoll_sys::syscalls();
        let mut requeued = Vec::new();
        loop {
            self.now = plan.now();
            let now = self.now;
            if now < self.end && stop.load(Ordering::Relaxed) {
                self.end = now;
                self.grace_end = now + plan.grace.min(STOP_GRACE);
            }
            if !self.rec.measuring && now >= plan.warm_end && plan.warm_end < self.end {
                self.rec.measuring = true;
                cpu_start = thread_cpu_us();
                sys_start = ringpoll_sys::syscalls();
            }
            if let Some(h) = self.rec.second.as_mut() {
                while now >= next_second && next_second < self.end {
                    let _ = tx.send(Msg::Second { sec, hist: h.clone() });
                    h.reset();
                    sec += 1;
                    next_second += SECOND;
                }
            }
            if self.budget == Some(0) && now < self.end && self.rec.measuring && self.in_flight() == 0 {
                // `-n`: every request of this thread's share is answered (or lost).
                self.end = now;
                self.grace_end = now;
            }
            if now >= self.end && (now >= self.grace_end || self.in_flight() == 0) {
                break;
            }
            self.fire_timers();
            if now >= next_sweep {
                next_sweep = now + SWEEP_EVERY;
                self.sweep();
            }

            let mut wake = next_sweep.min(if now < self.end { self.end } else { self.grace_end });
            if !self.rec.measuring && plan.warm_end > now {
                wake = wake.min(plan.warm_end);
            }
            if self.rec.second.is_some() && next_second < self.end {
                wake = wake.min(next_second);
            }
            if let Some(&Reverse((t, _))) = self.timers.peek() {
                if self.timerfd.is_some() {
                    self.arm_timerfd(t);
                } else {
                    wake = wake.min(t);
                }
            }
            let timeout = if self.requeue.is_empty() {
                Duration::from_nanos(wake.saturating_sub(self.now))
            } else {
                Duration::ZERO
            };
            self.poller
                .wait(&mut events, Some(timeout))
                .map_err(|e| io::Error::new(e.kind(), format!("{} wait: {e}", P::NAME)))?;
            for &ev in &events {
                self.on_event(ev);
            }
            if P::MODE == Mode::Edge && !self.requeue.is_empty() {
                std::mem::swap(&mut self.requeue, &mut requeued);
                for (idx, generation) in requeued.drain(..) {
                    let ev = Event {
                        token: token(idx as usize, generation),
                        readable: true,
                        writable: true,
                        hup: false,
                        error: false,
                    };
                    self.on_event(ev);
                }
            }
            live.requests.store(self.rec.requests, Ordering::Relaxed);
            live.replies.store(self.rec.replies, Ordering::Relaxed);
            live.errors.store(self.rec.errors.total(), Ordering::Relaxed);
            live.connect_failures.store(self.connect_failures, Ordering::Relaxed);
            if self.connected_ever {
                live.connected.store(true, Ordering::Relaxed);
            }
        }
        let cpu_us = if self.rec.measuring { thread_cpu_us().saturating_sub(cpu_start) } else { 0 };
        let syscalls = if self.rec.measuring { ringpoll_sys::syscalls() - sys_start } else { 0 };
        if let Some(h) = self.rec.second.take() {
            let _ = tx.send(Msg::Second { sec, hist: h });
        }
        live.requests.store(self.rec.requests, Ordering::Relaxed);
        let warm_end = plan.warm_end;
        let incomplete =
            self.conns.iter().flat_map(|c| c.slots.iter()).filter(|s| s.intended >= warm_end).count() as u64;
        let idle_connected = self.conns.iter().filter(|c| c.idle && c.state == State::Open).count();
        Ok(ThreadOut {
            rec: self.rec,
            cpu_us,
            syscalls,
            end: self.end.max(warm_end),
            connected_ever: self.connected_ever,
            last_connect_error: self.last_connect_error,
            idle_connected,
            incomplete,
            first_error: self.first_error,
        })
    }

    fn in_flight(&self) -> usize {
        self.conns.iter().map(|c| c.slots.len()).sum()
    }

    fn arm_timerfd(&mut self, at: u64) {
        if self.timerfd_at == at {
            return;
        }
        if let Some(tfd) = &self.timerfd {
            let after = Duration::from_nanos(at.saturating_sub(self.plan.now()).max(1));
            if tfd.set(Expiration::OneShot(TimeSpec::from_duration(after)), TimerSetTimeFlags::empty()).is_ok() {
                self.timerfd_at = at;
            }
        }
    }

    fn on_timerfd(&mut self) {
        if let Some(tfd) = &self.timerfd {
            // Non-blocking: clears the expiration count (EAGAIN when already clear).
            let _ = tfd.wait();
            let _ = self.poller.rearm(tfd.as_fd().as_raw_fd(), TIMER, Interest::READ);
        }
        self.timerfd_at = 0;
    }

    fn fire_timers(&mut self) {
        while let Some(&Reverse((t, idx))) = self.timers.peek() {
            if t > self.now {
                break;
            }
            self.timers.pop();
            let idx = idx as usize;
            let c = &mut self.conns[idx];
            if c.timer_at != t {
                continue;
            }
            c.timer_at = 0;
            match c.state {
                State::Waiting if self.now < self.end => self.connect(idx),
                State::Waiting => c.state = State::Done,
                State::Open => self.pump(idx),
                State::Connecting | State::Done => {}
            }
        }
    }

    fn set_timer(&mut self, idx: usize, at: u64) {
        let at = at.max(1);
        let c = &mut self.conns[idx];
        if c.timer_at != at {
            c.timer_at = at;
            self.timers.push(Reverse((at, idx as u32)));
        }
    }

    fn sweep(&mut self) {
        let now = self.now;
        for idx in 0..self.conns.len() {
            let c = &self.conns[idx];
            match c.state {
                State::Open => {
                    if c.slots.front().is_some_and(|s| now.saturating_sub(s.sent) > self.plan.timeout) {
                        self.drop_conn(idx, Lost::Timeout);
                    }
                }
                State::Connecting => {
                    if now.saturating_sub(c.since) > self.plan.connect_timeout {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "connection timed out");
                        self.drop_conn(idx, Lost::Connect(e));
                    }
                }
                State::Waiting | State::Done => {}
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        if ev.token == TIMER {
            self.on_timerfd();
            return;
        }
        let idx = (ev.token & 0xffff_ffff) as usize;
        let Some(c) = self.conns.get(idx) else { return };
        if u64::from(c.generation) != ev.token >> 32 {
            return;
        }
        self.now = self.plan.now();
        match c.state {
            State::Connecting => self.on_connect_event(idx, ev),
            State::Open => self.on_ready(idx, ev),
            State::Waiting | State::Done => {}
        }
    }

    fn connect(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        c.since = self.now;
        match socket::connect_nonblocking(self.plan.addr) {
            Ok(s) => {
                // Best effort: requests are small and must leave at once.
                let _ = socket::set_nodelay(&s);
                match self.poller.add(s.as_raw_fd(), token(idx, c.generation), Interest::WRITE) {
                    Ok(()) => {
                        c.stream = Some(s);
                        c.state = State::Connecting;
                    }
                    Err(e) => self.drop_conn(idx, Lost::Connect(e)),
                }
            }
            Err(e) => self.drop_conn(idx, Lost::Connect(e)),
        }
    }

    fn on_connect_event(&mut self, idx: usize, ev: Event) {
        let c = &mut self.conns[idx];
        let Some(stream) = c.stream.as_ref() else { return };
        let err = socket::take_error(stream).unwrap_or_else(Some);
        if let Some(e) = err {
            self.drop_conn(idx, Lost::Connect(e));
            return;
        }
        if !(ev.writable || ev.hup || ev.error) {
            // Spurious: keep waiting for the connect to complete.
            if let Err(e) = self.poller.rearm(stream.as_raw_fd(), token(idx, c.generation), Interest::WRITE) {
                self.drop_conn(idx, Lost::Poller(e));
            }
            return;
        }
        c.state = State::Open;
        if c.idle {
            c.backoff = MIN_BACKOFF;
        }
        self.connected_ever = true;
        self.rec.connected();
        if ev.readable || ev.hup || ev.error {
            self.on_ready(idx, ev);
        } else {
            self.pump(idx);
        }
    }

    fn on_ready(&mut self, idx: usize, ev: Event) {
        if ev.readable || ev.hup || ev.error {
            if let Err(lost) = self.read(idx) {
                self.drop_conn(idx, lost);
                return;
            }
        }
        self.pump(idx);
    }

    /// Read until a short read (or the budget runs out), handing every batch to the protocol.
    fn read(&mut self, idx: usize) -> Result<(), Lost> {
        let Worker { conns, rx, rec, plan, now, requeue, .. } = self;
        let c = &mut conns[idx];
        let Some(stream) = c.stream.take() else { return Ok(()) };
        let mut result = Ok(());
        let mut exhausted = true;
        for _ in 0..READ_BUDGET {
            match socket::recv(&stream, rx) {
                Ok(Some(0)) => {
                    result = Err(c.on_eof(plan, *now, rec));
                    exhausted = false;
                    break;
                }
                Ok(Some(n)) => {
                    rec.read(n);
                    if let Err(lost) = c.on_bytes(&rx[..n], plan, *now, rec) {
                        result = Err(lost);
                        exhausted = false;
                        break;
                    }
                    if n < rx.len() {
                        exhausted = false;
                        break;
                    }
                }
                Ok(None) => {
                    exhausted = false;
                    break;
                }
                Err(e) => {
                    result = Err(Lost::Read(e));
                    exhausted = false;
                    break;
                }
            }
        }
        c.stream = Some(stream);
        if exhausted && P::MODE == Mode::Edge {
            requeue.push((idx as u32, c.generation));
        }
        result
    }

    /// Queue what is due, send it, re-arm.
    fn pump(&mut self, idx: usize) {
        if self.conns[idx].state != State::Open {
            return;
        }
        if !self.conns[idx].idle && self.now < self.end {
            self.top_up(idx);
        }
        if let Err(e) = self.flush(idx) {
            self.drop_conn(idx, Lost::Write(e));
            return;
        }
        let c = &self.conns[idx];
        let Some(stream) = c.stream.as_ref() else { return };
        let interest = if c.sent < c.queued { Interest::BOTH } else { Interest::READ };
        if let Err(e) = self.poller.rearm(stream.as_raw_fd(), token(idx, c.generation), interest) {
            self.drop_conn(idx, Lost::Poller(e));
        }
    }

    fn top_up(&mut self, idx: usize) {
        let (plan, now, end) = (self.plan, self.now, self.end);
        let budget = &mut self.budget;
        // `-n`: a request of the window uses up one of the thread's share.
        let mut allowed = |intended: u64| match budget {
            Some(left) if intended >= plan.warm_end => {
                if *left == 0 {
                    return false;
                }
                *left -= 1;
                true
            }
            _ => true,
        };
        let c = &mut self.conns[idx];
        // Requests a `Connection: close` left unanswered go first (their `-n` share is spent).
        let mut retried = std::mem::take(&mut c.retry);
        for s in retried.drain(..) {
            if c.slots.len() < plan.depth {
                c.queue(Slot { intended: s.intended, sent: now }, plan.msg_len);
            }
        }
        let room = plan.depth - c.slots.len();
        match plan.interval_ns {
            None => {
                for _ in 0..room {
                    if !allowed(now) {
                        break;
                    }
                    c.queue(Slot { intended: now, sent: now }, plan.msg_len);
                }
            }
            Some(interval) => {
                for _ in 0..room {
                    let t = c.next_intended(interval);
                    if t > now || t >= end || !allowed(t) {
                        break;
                    }
                    c.queue(Slot { intended: t, sent: now }, plan.msg_len);
                    c.next_k += 1;
                }
                if c.slots.len() < plan.depth {
                    let t = c.next_intended(interval);
                    if t < end {
                        self.set_timer(idx, t);
                    }
                }
            }
        }
    }

    /// Send queued bytes until done or the socket is full.
    fn flush(&mut self, idx: usize) -> io::Result<()> {
        let Worker { conns, plan, rec, .. } = self;
        let c = &mut conns[idx];
        let Some(stream) = c.stream.as_ref() else { return Ok(()) };
        while c.sent < c.queued {
            let chunk = c.outgoing(plan);
            match socket::send(stream, chunk)? {
                Some(n) => {
                    c.sent += n as u64;
                    rec.written(n);
                    if n < chunk.len() {
                        break;
                    }
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Close a connection, count why, and reconnect (at once after a clean close, after the
    /// backoff after a failure, never once the window is over).
    fn drop_conn(&mut self, idx: usize, lost: Lost) {
        let plan = self.plan;
        let c = &mut self.conns[idx];
        // After `Connection: close` the unanswered requests are sent again, not lost.
        let retry = matches!(lost, Lost::ServerClose).then(|| {
            c.keep_unanswered();
            std::mem::take(&mut c.retry)
        });
        let in_flight = !c.slots.is_empty();
        if c.served {
            c.backoff = MIN_BACKOFF;
        }
        let (kind, failed) = match &lost {
            Lost::Eof | Lost::ServerClose => (in_flight.then_some(ErrorKind::Read), in_flight || !c.served),
            Lost::Read(_) | Lost::Frame(_) | Lost::Unexpected | Lost::Poller(_) => (Some(ErrorKind::Read), true),
            Lost::Write(_) => (Some(ErrorKind::Write), true),
            Lost::Timeout => (Some(ErrorKind::Timeout), true),
            Lost::Connect(_) => (Some(ErrorKind::Connect), true),
        };
        if let Lost::Connect(e) = &lost {
            self.connect_failures += 1;
            self.last_connect_error = Some(io::Error::new(e.kind(), describe_connect_error(e)));
        }
        if let Some(k) = kind {
            if self.rec.measuring && self.first_error.is_none() {
                self.first_error = Some(lost.describe());
            }
            self.rec.error(k);
        }
        if let Some(s) = c.stream.take() {
            let _ = self.poller.delete(s.as_raw_fd());
        }
        c.reset(plan);
        if let Some(r) = retry {
            c.retry = r;
        }
        c.generation = c.generation.wrapping_add(1);
        c.timer_at = 0;
        if self.now >= self.end {
            c.state = State::Done;
        } else if failed {
            c.state = State::Waiting;
            let at = self.now + c.backoff;
            c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
            self.set_timer(idx, at);
        } else {
            self.connect(idx);
        }
    }
}
