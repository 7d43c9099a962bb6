//! Ring creation (setup flags with fallback), the opcode probe, ring-fd registration and the
//! raw `io_uring_enter`.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{opcode, IoUring, Probe};

use super::SetupError;
use crate::sys::{count_syscall, syscall};

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

/// Setup flags tried in order; the next set is tried when the kernel answers EINVAL.
const ATTEMPTS: [(&str, Flags); 3] = [
    ("SINGLE_ISSUER|DEFER_TASKRUN", Flags::DeferTaskrun),
    ("COOP_TASKRUN", Flags::CoopTaskrun),
    ("no setup flags", Flags::None),
];

#[derive(Clone, Copy)]
enum Flags {
    DeferTaskrun,
    CoopTaskrun,
    None,
}

/// Create a ring with the best setup flags this kernel accepts; returns it and their name.
pub(super) fn build(sq_entries: u32, cq_entries: u32) -> Result<(IoUring, &'static str), SetupError> {
    for (name, flags) in ATTEMPTS {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries).setup_clamp();
        match flags {
            Flags::DeferTaskrun => {
                b.setup_submit_all().setup_single_issuer().setup_defer_taskrun();
            }
            Flags::CoopTaskrun => {
                b.setup_submit_all().setup_coop_taskrun();
            }
            Flags::None => {}
        }
        count_syscall();
        match b.build(sq_entries) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(setup_failure(&e)),
        }
    }
    Err(unavailable(
        "io_uring_setup rejected every flag combination with EINVAL (kernel too old: ringpoll needs Linux 6.0 or later)",
    ))
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

const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
const IORING_REGISTER_RING_FDS: u32 = 20;
const IORING_UNREGISTER_RING_FDS: u32 = 21;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_getevents_arg`.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// What an enter waits for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wait {
    /// Give up after this long (ETIME).
    pub timeout: Duration,
    /// Completions to wait for...
    pub min_complete: u32,
    /// ...for at most this long, after which one completion is enough (zero: no such phase;
    /// needs IORING_FEAT_MIN_TIMEOUT).
    pub min_wait: Duration,
}

/// How this thread enters the ring: through its registered index when the kernel allows it
/// (no fd lookup per call), else through the ring fd.
pub(super) struct Enter {
    fd: i32,
    flags: u32,
}

impl Enter {
    /// Register the ring fd for the calling thread (best effort: Linux 5.18+).
    pub fn new(ring: &IoUring) -> Self {
        let raw = ring.as_raw_fd();
        let mut up = RsrcUpdate { offset: u32::MAX, resv: 0, data: raw as u64 };
        let r = syscall!(syscall(
            libc::SYS_io_uring_register,
            // SAFETY: `raw` is our ring; `up` is a live io_uring_rsrc_update and nr_args is 1.
            libc::c_long::from(raw),
            libc::c_long::from(IORING_REGISTER_RING_FDS),
            std::ptr::from_mut(&mut up),
            1 as libc::c_long
        ));
        match r {
            Ok(_) => Self { fd: up.offset as i32, flags: IORING_ENTER_REGISTERED_RING },
            Err(_) => Self { fd: raw, flags: 0 },
        }
    }

    pub fn registered(&self) -> bool {
        self.flags & IORING_ENTER_REGISTERED_RING != 0
    }

    /// Undo [`Enter::new`]'s registration (it holds a reference that keeps the ring alive).
    pub fn unregister(&mut self, ring: &IoUring) {
        if !self.registered() {
            return;
        }
        let mut up = RsrcUpdate { offset: self.fd as u32, resv: 0, data: 0 };
        let r = syscall!(syscall(
            libc::SYS_io_uring_register,
            // SAFETY: as in `new`, with the index the kernel gave us.
            libc::c_long::from(ring.as_raw_fd()),
            libc::c_long::from(IORING_UNREGISTER_RING_FDS),
            std::ptr::from_mut(&mut up),
            1 as libc::c_long
        ));
        if let Err(e) = r {
            tracing::debug!("unregistering the io_uring fd: {e}");
        }
        self.fd = ring.as_raw_fd();
        self.flags = 0;
    }

    /// Submit `to_submit` queued entries; with `wait`, block as it says. With `getevents`
    /// (implied by `wait`), run deferred task work so that completions are posted.
    pub fn enter(&self, to_submit: u32, wait: Option<Wait>, getevents: bool) -> io::Result<()> {
        let mut flags = self.flags;
        if getevents || wait.is_some() {
            flags |= IORING_ENTER_GETEVENTS;
        }
        let ts = wait.map(|w| KernelTimespec {
            tv_sec: i64::try_from(w.timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(w.timeout.subsec_nanos()),
        });
        let min_wait_usec = wait.map_or(0, |w| u32::try_from(w.min_wait.as_micros()).unwrap_or(u32::MAX));
        let arg = ts.as_ref().map(|ts| GeteventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec,
            ts: std::ptr::from_ref(ts) as u64,
        });
        let (argp, argsz) = match &arg {
            Some(a) => {
                flags |= IORING_ENTER_EXT_ARG;
                (std::ptr::from_ref(a).cast::<libc::c_void>(), std::mem::size_of::<GeteventsArg>())
            }
            None => (std::ptr::null(), 0),
        };
        syscall!(syscall(
            libc::SYS_io_uring_enter,
            // SAFETY: `fd` is our ring (or its registered index, flagged as such); `argp` is null
            // or a live io_uring_getevents_arg (flagged EXT_ARG, with its size) whose `ts` points
            // to a live timespec; both outlive the call.
            libc::c_long::from(self.fd),
            libc::c_long::from(to_submit),
            libc::c_long::from(wait.map_or(0, |w| w.min_complete)),
            libc::c_long::from(flags),
            argp,
            argsz
        ))
        .map(drop)
    }
}
