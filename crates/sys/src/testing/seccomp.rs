//! A seccomp filter that makes io_uring_setup fail with EPERM, as container runtimes'
//! default profiles do: lets tests (and operators reproducing a container) check that the
//! io_uring backend refuses clearly instead of failing obscurely.

use std::os::unix::process::CommandExt;
use std::process::Command;

fn filter() -> [libc::sock_filter; 6] {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH, 0, 3),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // seccomp_data.nr
        jeq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Make the child that `cmd` spawns unable to call io_uring_setup (it gets EPERM).
pub fn deny_io_uring_setup_on_exec(cmd: &mut Command) -> &mut Command {
    let filter = filter();
    let hook = move || -> std::io::Result<()> {
        let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
        // SAFETY: prctl with integer arguments only; runs in the forked child before exec.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `prog` points to `filter`, a valid BPF program that lives across the call.
        if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, std::ptr::from_ref(&prog)) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only calls prctl (async-signal-safe) on memory it owns and allocates
    // nothing, as required between fork and exec.
    unsafe { cmd.pre_exec(hook) }
}
