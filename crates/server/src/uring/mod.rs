//! The io_uring worker (being written).

use crate::stats::Counters;
use crate::worker::{BackendError, WorkerCtx};
use crate::ServeError;

pub(crate) fn run(_ctx: WorkerCtx) -> Result<Counters, BackendError> {
    Err(BackendError::Serve(ServeError::UringUnavailable(
        "the io_uring backend is not built yet; use --backend epoll".into(),
    )))
}
