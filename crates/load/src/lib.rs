//! ringpoll load generator (being written).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    pub target: String,
}

pub fn run(_args: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
