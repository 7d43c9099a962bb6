//! Descriptor limits: many connections need many descriptors.

use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raise the soft RLIMIT_NOFILE to the hard limit (best effort); returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    crate::count_syscall();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        crate::count_syscall();
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Number of descriptors this process has open (reads /proc/self/fd).
pub fn open_fds() -> io::Result<usize> {
    // The directory handle used for the listing is itself one of the descriptors.
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let raised = raise_nofile_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((raised, soft), (hard, hard));
    }

    #[test]
    fn open_descriptors_are_counted() {
        let before = open_fds().unwrap();
        assert!(before >= 3, "stdin, stdout, stderr at least: {before}");
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        // Other tests run in parallel threads: only check that ours is seen at all.
        assert!(open_fds().unwrap() >= 4);
        drop(f);
    }
}
