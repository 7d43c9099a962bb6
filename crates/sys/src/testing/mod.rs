//! Helpers for tests (the `testing` feature, enabled only through dev-dependencies).
//!
//! - [`seccomp`]: make a child process unable to set up io_uring, as container runtimes'
//!   default profiles do.
//! - [`uring_refused`]: the one rule for an io_uring test on a machine that refuses io_uring:
//!   it fails when `RINGPOLL_REQUIRE_URING` is set (CI sets it), and otherwise says that it
//!   skipped where `cargo test` shows it; [`uring_feature_refused`] is the same rule for an
//!   optional io_uring technique (fixed files, recv bundles, ...) the kernel lacks.

pub mod seccomp;

use std::io::Write;

/// Set (to anything but `0` or nothing) to make every io_uring test fail instead of skipping
/// where the kernel refuses io_uring. `.ci/run` sets it.
pub const REQUIRE_URING: &str = "RINGPOLL_REQUIRE_URING";

/// Whether [`REQUIRE_URING`] is set.
#[must_use]
pub fn uring_required() -> bool {
    std::env::var_os(REQUIRE_URING).is_some_and(|v| !v.is_empty() && v != "0")
}

/// An io_uring test cannot run because the kernel refuses io_uring (`why`). Panics when
/// io_uring is required; otherwise prints `SKIP <test>: the kernel refuses io_uring: <why>`
/// and returns, and the caller returns early.
///
/// The line is written to the process's stderr itself: the test harness captures what
/// `eprintln!` prints in a passing test and never shows it, whereas a direct write reaches
/// the terminal (and CI logs) in the middle of the `cargo test` output.
pub fn uring_refused(why: &str) {
    let test = current_test();
    assert!(!uring_required(), "{test}: io_uring is required ({REQUIRE_URING} is set) but refused here: {why}");
    let mut err = std::io::stderr().lock();
    // Nothing sensible is left to do if stderr itself fails.
    let _ = writeln!(err, "SKIP {test}: the kernel refuses io_uring: {why}");
}

/// An io_uring test of an optional technique cannot run because this kernel lacks it
/// (`why`: the ring's fallback line). Panics when io_uring is required, naming the feature
/// and the kernel; otherwise prints `SKIP <test>: Linux <version> lacks <feature>: <why>`
/// and returns, and the caller returns early.
pub fn uring_feature_refused(feature: &str, why: &str) {
    let test = current_test();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = kernel.trim();
    assert!(
        !uring_required(),
        "{test}: io_uring {feature} is required ({REQUIRE_URING} is set) but Linux {kernel} lacks it: {why}"
    );
    let mut err = std::io::stderr().lock();
    // Nothing sensible is left to do if stderr itself fails.
    let _ = writeln!(err, "SKIP {test}: Linux {kernel} lacks io_uring {feature}: {why}");
}

/// The running test's name (the test harness names each test's thread after it).
#[must_use]
pub fn current_test() -> String {
    std::thread::current().name().unwrap_or("this test").to_string()
}
