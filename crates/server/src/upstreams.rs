//! A worker's side of the proxy's upstream groups, the same for both loops: one balancer per
//! group, the per-upstream counters it publishes, the access log, and the upstream log lines.
//! The loops hold one [`Upstreams`] and call it when a pair needs an upstream, when a connect
//! fails, and when a pair ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ringpoll_proto::lifecycle::pair::ProxyPair;
use ringpoll_proto::relay::Side;
use ringpoll_proto::upstream::Balancer;
use ringpoll_proto::CloseReason;
use tracing::warn;

use crate::accesslog::{AccessLog, Record};
use crate::config::Config;
use crate::ctx::WorkerCtx;
use crate::stats::{Counters, SharedUpstreams};
use crate::RateLimit;

pub(crate) struct Upstreams {
    /// One per upstream group (this worker's view).
    balancers: Vec<Balancer>,
    shared: Arc<SharedUpstreams>,
    access_log: Option<AccessLog>,
    /// Failed connects, and clients closed for want of a usable upstream: at most one line
    /// per second each.
    failed_log: RateLimit,
    none_log: RateLimit,
}

/// The upstream group of proxy listener `listener`.
pub(crate) fn group(cfg: &Config, listener: usize) -> usize {
    cfg.listeners[listener].group.unwrap_or(0)
}

/// The address of upstream `i` of `listener`'s group.
pub(crate) fn addr(cfg: &Config, listener: usize, i: usize) -> Option<SocketAddr> {
    cfg.groups.get(group(cfg, listener))?.upstreams.get(i).map(|u| u.addr)
}

impl Upstreams {
    pub fn new(ctx: &WorkerCtx) -> Self {
        let balancers = ctx
            .cfg
            .groups
            .iter()
            .zip(&ctx.boards)
            .map(|(g, board)| Balancer::new(&g.upstreams, g.strategy, g.passive, board.clone()))
            .collect();
        Self {
            balancers,
            shared: ctx.upstreams.clone(),
            access_log: ctx.access_log.clone(),
            failed_log: RateLimit::new(Duration::from_secs(1)),
            none_log: RateLimit::new(Duration::from_secs(1)),
        }
    }

    /// The balancer of `listener`'s group.
    pub fn balancer(&mut self, cfg: &Config, listener: usize) -> Option<&mut Balancer> {
        self.balancers.get_mut(group(cfg, listener))
    }

    /// A pair of `listener` reached its deadline: let its lifecycle act on it, and when that
    /// was the connect deadline, account the failed connect (the pair then retries once
    /// elsewhere or gives up, as `ProxyPair::on_timer` decides).
    pub fn pair_timer(&mut self, cfg: &Config, stats: &Counters, now: Instant, listener: usize, life: &mut ProxyPair) {
        let upstream = life.upstream();
        let Some(bal) = self.balancer(cfg, listener) else { return };
        if life.on_timer(now, &cfg.listeners[listener].pair, bal) {
            let addr = upstream.and_then(|i| addr(cfg, listener, i));
            self.connect_failed(stats, now, addr, &io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
    }

    /// Log a failed connect (they are counted by the balancer).
    pub fn connect_failed(&mut self, stats: &Counters, now: Instant, addr: Option<SocketAddr>, e: &io::Error) {
        if self.failed_log.allow(now) {
            let a = addr.map_or_else(|| "?".into(), |a| a.to_string());
            warn!("upstream {a}: {e} ({} upstream failures so far)", stats.upstream_failures + 1);
        }
    }

    /// A pair of `listener` ended with `reason`: the upstream's byte counts, the access log,
    /// and the warning when it ended for want of a usable upstream.
    pub fn finished(
        &mut self,
        cfg: &Config,
        stats: &Counters,
        listener: usize,
        life: &ProxyPair,
        reason: CloseReason,
        now: Instant,
    ) {
        let g = group(cfg, listener);
        if reason == CloseReason::Upstream && self.none_log.allow(now) {
            let name = cfg.groups.get(g).map_or("?", |g| g.name.as_str());
            let closed = stats.conn.closed_by(CloseReason::Upstream);
            warn!("upstream group {name}: no usable upstream, closing the client ({closed} closed so far for want of one)");
        }
        let upstream = life.upstream();
        let (up, down) = (life.bytes_from(Side::Client), life.bytes_from(Side::Upstream));
        if let (Some(i), Some(bal)) = (upstream, self.balancers.get_mut(g)) {
            bal.account_bytes(i, up, down);
        }
        if let Some(log) = &self.access_log {
            log.log(Record {
                end: SystemTime::now(),
                client: life.client(),
                listener: life.listener(),
                upstream: upstream.and_then(|i| addr(cfg, listener, i)),
                bytes_up: up,
                bytes_down: down,
                duration: now.saturating_duration_since(life.started()),
                reason,
            });
        }
    }

    /// Once per loop iteration: per-upstream counters out, the worker's failure total in.
    pub fn publish(&self, stats: &mut Counters) {
        let mut failures = 0;
        for (g, bal) in self.balancers.iter().enumerate() {
            for i in 0..bal.len() {
                let s = bal.stats(i);
                failures += s.failures;
                self.shared.publish_stats(g, i, &s);
            }
        }
        stats.upstream_failures = failures;
    }
}
