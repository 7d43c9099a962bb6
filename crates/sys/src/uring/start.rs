//! Bringing a ring up: sizes checked, the ring created (SQPOLL and a registered wait region
//! if asked), opcodes probed, the provided-buffer ring registered (incremental if asked),
//! the fixed file table registered, recv bundles self-tested. Every technique the kernel
//! lacks is turned off with one INFO line, and the caller gets what was granted.

use std::io;

use io_uring::opcode;
use tracing::info;

use super::bufring::{BufRing, BGID};
use super::features::{pretend_missing, self_test, SelfTest, Techniques};
use super::fixed;
use super::regwait::RegWait;
use super::setup::{self, SetupError};
use super::submit::Uring;

/// Sizes of a worker's ring.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub buf_count: u16,
    pub buf_size: u32,
    /// Sends of at least this many bytes use IORING_OP_SEND_ZC (0: never).
    pub send_zc_min: usize,
    /// Map the provided receive buffers for transparent huge pages (aligned, MADV_HUGEPAGE)
    /// where the pool spans at least one; the system may still refuse them.
    pub huge_pages: bool,
}

/// A ring brought up, with what it got.
pub(super) struct Parts {
    pub uring: Uring,
    pub bufs: BufRing,
    /// The techniques granted.
    pub granted: Techniques,
    /// One line per technique asked for and not granted.
    pub fallbacks: Vec<String>,
    pub recv_limit: bool,
    pub min_timeout: bool,
    pub send_zc: bool,
    /// One line describing the setup, for the log.
    pub info: String,
}

fn refuse(fallbacks: &mut Vec<String>, what: &str, why: &str) {
    let line = format!("io_uring: {what} off: {why}");
    info!("{line}");
    fallbacks.push(line);
}

fn buf_ring_failure(e: &io::Error) -> SetupError {
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::EOPNOTSUPP) => {
            setup::unavailable(&format!("registering a provided-buffer ring failed ({e}; needs Linux 5.19 or later)"))
        }
        Some(libc::ENOMEM) => {
            setup::unavailable(&format!("registering the provided-buffer ring failed ({e}; try fewer --uring-bufs)"))
        }
        _ => SetupError::Io(io::Error::new(e.kind(), format!("registering the buffer ring: {e}"))),
    }
}

pub(super) fn start(cfg: &RingConfig, asked: Techniques) -> Result<Parts, SetupError> {
    if !cfg.buf_count.is_power_of_two() || cfg.buf_count > 32768 {
        return Err(SetupError::Invalid(format!(
            "--uring-bufs must be a power of two between 1 and 32768 (got {})",
            cfg.buf_count
        )));
    }
    if cfg.buf_size == 0 || cfg.buf_size > (1 << 30) {
        return Err(SetupError::Invalid(format!("--uring-buf-size out of range (got {})", cfg.buf_size)));
    }
    let mut granted = Techniques::default();
    let mut fallbacks = Vec::new();
    let sq = cfg.sq_entries.clamp(1, 32768);
    let cq = cfg.cq_entries.clamp(sq.next_power_of_two(), 65536);
    let sqpoll = asked.sqpoll_idle.filter(|_| !pretend_missing(|t| t.sqpoll_idle.is_some()));
    if asked.sqpoll_idle.is_some() && sqpoll.is_none() {
        refuse(&mut fallbacks, "SQPOLL", "pretended missing (test)");
    }
    let built = setup::build(sq, cq, sqpoll, asked.reg_wait)?;
    if let Some(why) = &built.sqpoll_refused {
        refuse(&mut fallbacks, "SQPOLL", why);
    }
    let ring = built.ring;
    if ring.params().is_setup_sqpoll() {
        granted.sqpoll_idle = asked.sqpoll_idle;
    }
    let regwait = if asked.reg_wait {
        let r = if pretend_missing(|t| t.reg_wait) {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            RegWait::register(&ring)
        };
        setup::enable(&ring)?;
        match r {
            Ok(r) => Some(r),
            Err(e) => {
                refuse(
                    &mut fallbacks,
                    "registered waits",
                    &format!("registering a wait region failed ({e}; needs Linux 6.13)"),
                );
                None
            }
        }
    } else {
        None
    };
    granted.reg_wait = regwait.is_some();
    setup::check(&ring)?;
    let mut bufs = BufRing::new(cfg.buf_count, cfg.buf_size, BGID, false, cfg.huge_pages)
        .map_err(|e| SetupError::Io(io::Error::new(e.kind(), format!("mapping the io_uring receive buffers: {e}"))))?;
    let inc = asked.buf_inc && !pretend_missing(|t| t.buf_inc);
    if asked.buf_inc && !inc {
        refuse(&mut fallbacks, "incremental buffers", "pretended missing (test)");
    }
    let mut registered = bufs.register(&ring.submitter(), inc);
    if inc {
        match &registered {
            Ok(()) => granted.buf_inc = true,
            Err(e) => {
                refuse(
                    &mut fallbacks,
                    "incremental buffers",
                    &format!("IOU_PBUF_RING_INC refused ({e}; needs Linux 6.12)"),
                );
                registered = bufs.register(&ring.submitter(), false);
            }
        }
    }
    if let Err(e) = registered {
        return Err(buf_ring_failure(&e));
    }
    if asked.fixed_files > 0 {
        let r = if pretend_missing(|t| t.fixed_files > 0) {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            fixed::register_table(&ring.submitter(), asked.fixed_files)
        };
        match r {
            Ok((n, note)) => {
                granted.fixed_files = n;
                if let Some(note) = note {
                    // The caller sees the size granted (`Techniques::fixed_files`) and says
                    // what it means for its connections.
                    tracing::debug!("io_uring: {note}");
                }
            }
            Err(e) => refuse(
                &mut fallbacks,
                "fixed files",
                &format!("registering a fixed file table failed ({e}; needs Linux 5.19)"),
            ),
        }
    }
    let send_zc = setup::supports(&ring, opcode::SendZc::CODE);
    let params_bundle = ring.params().is_feature_recvsend_bundle() && !pretend_missing(|t| t.bundle);
    let min_timeout = ring.params().is_feature_min_timeout();
    let mut uring = Uring::new(ring, regwait);
    let recv_limit = setup::probe_recv_limit(&mut uring);
    // Both change how the worker finds its bytes: each is self-tested before use.
    let mut seen = SelfTest::default();
    if granted.buf_inc {
        match self_test(&mut uring, false, true) {
            Ok(s) => seen = s,
            Err(why) => {
                refuse(&mut fallbacks, "incremental buffers", &format!("the start-up self-test failed: {why}"));
                bufs.unregister(uring.submitter());
                bufs = BufRing::new(cfg.buf_count, cfg.buf_size, BGID, false, cfg.huge_pages).map_err(|e| {
                    SetupError::Io(io::Error::new(e.kind(), format!("mapping the io_uring receive buffers: {e}")))
                })?;
                bufs.register(uring.submitter(), false).map_err(|e| buf_ring_failure(&e))?;
                granted.buf_inc = false;
            }
        }
    }
    if asked.bundle && !params_bundle {
        refuse(&mut fallbacks, "recv bundles", "the kernel lacks IORING_FEAT_RECVSEND_BUNDLE (Linux 6.10)");
    } else if asked.bundle {
        match self_test(&mut uring, true, granted.buf_inc) {
            Ok(s) => {
                seen.max_buffers = seen.max_buffers.max(s.max_buffers);
                seen.shared |= s.shared;
                granted.bundle = true;
            }
            Err(why) => refuse(&mut fallbacks, "recv bundles", &format!("the start-up self-test failed: {why}")),
        }
    }
    let params = uring.ring().params();
    let info = format!(
        "io_uring {}, sq {} cq {}, {}, {} x {} B receive buffers ({} KiB on huge pages), receive byte limits {}, \
         batched waits {}, {}{}",
        built.flags,
        params.sq_entries(),
        params.cq_entries(),
        if uring.registered() { "registered ring fd" } else { "ring fd not registered" },
        cfg.buf_count,
        cfg.buf_size,
        bufs.huge_kib().map_or("?".into(), |k| k.to_string()),
        if recv_limit { "supported" } else { "unsupported" },
        if min_timeout { "supported" } else { "unsupported" },
        granted.describe(),
        if granted.bundle || granted.buf_inc {
            format!(
                " (self-test: up to {} buffers per completion{})",
                seen.max_buffers,
                if seen.shared { ", buffers shared" } else { "" }
            )
        } else {
            String::new()
        },
    );
    Ok(Parts { uring, bufs, granted, fallbacks, recv_limit, min_timeout, send_zc, info })
}
