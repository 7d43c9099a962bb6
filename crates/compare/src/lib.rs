//! ringpoll compare (being written).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[arg(long)]
    pub quick: bool,
}

pub fn run(_args: CompareArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
