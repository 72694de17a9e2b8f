pub async fn run(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}
