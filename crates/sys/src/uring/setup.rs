//! Ring creation (setup flags with fallback, SQPOLL if asked), the opcode probe, the probe for
//! receive byte limits, and the one-line refusal when io_uring is missing or forbidden.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, IoUring, Probe};

use super::bufring::BGID;
use super::fixed::Target;
use super::ops::{self, PROBE, PROBE_END};
use super::submit::{Uring, Wait};
use crate::count_syscall;

/// Why a ring could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// io_uring (or a feature the worker needs) is missing or forbidden: one line naming the
    /// cause and `--backend epoll`.
    Unavailable(String),
    /// A size in the configuration is out of range.
    Invalid(String),
    /// Anything else.
    Io(io::Error),
}

/// Opcodes the worker uses; a kernel lacking one is refused up front rather than failing on
/// the first request.
const REQUIRED: [(u8, &str); 7] = [
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::Connect::CODE, "CONNECT"),
];

/// Setup flags tried in order; the next set is tried when the kernel answers EINVAL. SQPOLL
/// (asked for) comes first; it excludes DEFER_TASKRUN.
/// TASKRUN_FLAG makes pending task work (completions the kernel will post at the next enter)
/// visible in the submission queue's flags, so that a waiting enter can skip its batch wait.
const ATTEMPTS: [(&str, Flags); 4] = [
    ("SQPOLL|SINGLE_ISSUER", Flags::SqPoll),
    ("SINGLE_ISSUER|DEFER_TASKRUN|TASKRUN_FLAG", Flags::DeferTaskrun),
    ("COOP_TASKRUN|TASKRUN_FLAG", Flags::CoopTaskrun),
    ("no setup flags", Flags::None),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flags {
    SqPoll,
    DeferTaskrun,
    CoopTaskrun,
    None,
}

/// A ring just created, still disabled if `disabled` was asked (so that a wait region can be
/// registered before it is enabled).
pub(super) struct Built {
    pub ring: IoUring,
    /// The setup flags it got.
    pub flags: &'static str,
    /// Why SQPOLL, asked for, was not granted.
    pub sqpoll_refused: Option<String>,
}

/// Create a ring with the best setup flags this kernel accepts: with a submission-queue
/// polling thread first when `sqpoll` gives its idle time, then without. `disabled` adds
/// IORING_SETUP_R_DISABLED to every attempt (enable it with [`enable`]).
pub(super) fn build(
    sq_entries: u32,
    cq_entries: u32,
    sqpoll: Option<Duration>,
    disabled: bool,
) -> Result<Built, SetupError> {
    let mut sqpoll_refused = None;
    for (name, flags) in ATTEMPTS {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries).setup_clamp();
        if disabled {
            b.setup_r_disabled();
        }
        match flags {
            Flags::SqPoll => {
                let Some(idle) = sqpoll else { continue };
                let idle_ms = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX).max(1);
                b.setup_submit_all().setup_single_issuer().setup_sqpoll(idle_ms);
            }
            Flags::DeferTaskrun => {
                b.setup_submit_all().setup_single_issuer().setup_defer_taskrun().setup_taskrun_flag();
            }
            Flags::CoopTaskrun => {
                b.setup_submit_all().setup_coop_taskrun().setup_taskrun_flag();
            }
            Flags::None => {}
        }
        count_syscall();
        match b.build(sq_entries) {
            Ok(ring) => {
                if sqpoll.is_some() && flags != Flags::SqPoll && sqpoll_refused.is_none() {
                    sqpoll_refused = Some("the kernel refused IORING_SETUP_SQPOLL with these flags".into());
                }
                return Ok(Built { ring, flags: name, sqpoll_refused });
            }
            // SQPOLL may also be refused for lack of privilege or memory: go on without it.
            Err(e) if flags == Flags::SqPoll => {
                sqpoll_refused = Some(format!("io_uring_setup with IORING_SETUP_SQPOLL failed: {e}"));
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(setup_failure(&e)),
        }
    }
    Err(unavailable(
        "io_uring_setup rejected every flag combination with EINVAL (kernel too old: ringpoll needs Linux 6.0 or later)",
    ))
}

/// Enable a ring created disabled.
pub(super) fn enable(ring: &IoUring) -> Result<(), SetupError> {
    count_syscall();
    ring.submitter()
        .register_enable_rings()
        .map_err(|e| SetupError::Io(io::Error::new(e.kind(), format!("enabling the io_uring: {e}"))))
}

/// Check the kernel features and opcodes the worker relies on.
pub(super) fn check(ring: &IoUring) -> Result<(), SetupError> {
    if !ring.params().is_feature_ext_arg() {
        return Err(unavailable("the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11+; ringpoll needs 6.0+)"));
    }
    let mut probe = Probe::new();
    count_syscall();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Err(unavailable(&format!("probing io_uring opcodes failed: {e} (kernel too old)")));
    }
    let missing: Vec<&str> = REQUIRED.iter().filter(|(code, _)| !probe.is_supported(*code)).map(|(_, n)| *n).collect();
    if !missing.is_empty() {
        return Err(unavailable(&format!("the kernel lacks the io_uring opcode(s) {}", missing.join(", "))));
    }
    Ok(())
}

/// Whether the kernel supports an optional opcode (one probe; false when probing fails).
pub(super) fn supports(ring: &IoUring, code: u8) -> bool {
    let mut probe = Probe::new();
    count_syscall();
    ring.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(code)
}

/// The one-line message for a refused io_uring, naming the cause and the alternative.
pub(super) fn unavailable(why: &str) -> SetupError {
    SetupError::Unavailable(format!("io_uring is not available: {why}; use --backend epoll"))
}

fn setup_failure(e: &io::Error) -> SetupError {
    let why = match e.raw_os_error() {
        Some(libc::EPERM) => format!("io_uring_setup failed with EPERM ({})", eperm_cause()),
        Some(libc::ENOSYS) => "io_uring_setup failed with ENOSYS (this kernel has no io_uring)".to_string(),
        Some(libc::ENOMEM) => {
            "io_uring_setup failed with ENOMEM (out of memory or locked-memory limit; try a smaller --uring-sq-entries)"
                .to_string()
        }
        _ => format!("io_uring_setup failed: {e}"),
    };
    unavailable(&why)
}

fn eperm_cause() -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    match sysctl.as_deref().map(str::trim) {
        Some(v) if v != "0" => format!("kernel.io_uring_disabled={v}"),
        _ => "a seccomp profile forbids it, as container runtimes' defaults do".to_string(),
    }
}

/// Does this kernel take a byte limit on multishot receives (Linux 6.17+)? Older kernels
/// reject the request with EINVAL when it is prepared, i.e. during the submit. Probed on a
/// socketpair that never carries data, before the worker queues anything.
pub(super) fn probe_recv_limit(uring: &mut Uring) -> bool {
    count_syscall();
    let Ok((a, _b)) = std::os::unix::net::UnixStream::pair() else { return false };
    let e = ops::recv_multi(Target::Fd(a.as_raw_fd()), BGID, Some(1), false).user_data(PROBE);
    // SAFETY: the entry carries no pointer (the buffers come from the registered ring).
    unsafe { uring.push(e) };
    let Some(cqes) = probe_round(uring) else { return false };
    let mut armed = true;
    let mut supported = true;
    for cqe in cqes.iter().filter(|c| c.user_data() == PROBE) {
        armed &= cqueue::more(cqe.flags());
        supported &= cqe.result() != -libc::EINVAL;
    }
    if armed {
        end_probe(uring);
    }
    supported
}

/// Submit what a probe queued followed by a no-op, and collect completions until the no-op's
/// (a submission-queue polling thread submits asynchronously; the no-op completes after the
/// probe's requests were issued). `None` if the ring fails or it takes over a second.
pub(super) fn probe_round(uring: &mut Uring) -> Option<Vec<cqueue::Entry>> {
    // SAFETY: no pointer in a no-op.
    unsafe { uring.push(ops::nop().user_data(PROBE_END)) };
    if uring.backlogged() {
        return None;
    }
    let end = Instant::now() + Duration::from_secs(1);
    let mut out = Vec::new();
    while Instant::now() < end {
        let wait = Wait { timeout: Duration::from_millis(50), min_complete: 1, min_wait: Duration::ZERO };
        match uring.enter(Some(wait), true) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(_) => return None,
        }
        let got = uring.drain();
        let done = got.iter().any(|c| c.user_data() == PROBE_END);
        out.extend(got);
        if done {
            return Some(out);
        }
    }
    None
}

/// Cancel every request tagged PROBE and wait (bounded) for their final completions. False
/// if one may still be armed.
pub(super) fn end_probe(uring: &mut Uring) -> bool {
    // SAFETY: no pointer in a cancel request.
    unsafe { uring.push(ops::cancel(PROBE)) };
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        let wait = Wait { timeout: Duration::from_millis(50), min_complete: 1, min_wait: Duration::ZERO };
        let _ = uring.enter(Some(wait), true);
        // Whatever is left is ignored, as PROBE, by the completions.
        if uring.drain().iter().any(|c| c.user_data() == PROBE && !cqueue::more(c.flags())) {
            return true;
        }
    }
    false
}
