//! Host options shared by every subcommand that runs sandboxes, and building the runtime.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use firkin_core::config::{Layout, RuntimeConfig};
use firkin_core::engine::runsc::RunscEngine;
use firkin_core::network::netns::{NetOptions, NetnsNetwork};
use firkin_core::runtime::Runtime;

#[derive(Args, Debug, Clone)]
pub struct HostArgs {
    /// Path of the firkin-agent binary (default: next to this executable).
    #[arg(long, env = "FIRKIN_AGENT")]
    pub agent: Option<PathBuf>,
    /// The runsc binary.
    #[arg(long, env = "FIRKIN_RUNSC", default_value = "runsc")]
    pub runsc: PathBuf,
    /// First address of the range carved into per-sandbox /30 networks (a /16 is used).
    #[arg(long, env = "FIRKIN_SUBNET_BASE", default_value = "10.210.0.0")]
    pub subnet_base: Ipv4Addr,
    /// Warm-pool depth per template: `template=N,...` (`none` for no pool).
    #[arg(long, env = "FIRKIN_WARM_POOL", default_value = "base=2,code-interpreter-v1=1", value_parser = parse_warm_pool)]
    pub warm_pool: std::collections::BTreeMap<String, usize>,
    /// Free-space floors in MiB: `restore=N,snapshot=N,warm=N` (of the filesystem that holds the
    /// artifact; below it the operation is refused with 507).
    #[arg(long, env = "FIRKIN_DISK_FLOORS", default_value = "restore=10240,snapshot=10240,warm=20480", value_parser = parse_floors)]
    pub disk_floors: firkin_core::runtime::disk::DiskFloors,
    /// Override the capacity read from the host: `cpu=MILLI,memory=MiB,disk=MiB` (any subset;
    /// cpu in milli-vCPU, already overcommitted).
    #[arg(long, env = "FIRKIN_CAPACITY")]
    pub capacity: Option<String>,
    /// Disk size (MiB) of sandboxes whose template does not set `diskSizeMB`: a hard limit on
    /// what each sandbox can write (ENOSPC inside past it), not a reservation.
    #[arg(long, env = "FIRKIN_DISK_SIZE_MB", default_value_t = 10240)]
    pub disk_size_mb: u32,
    /// Disk (MiB) each sandbox holds in the capacity ledger: headroom for what it writes.
    #[arg(long, env = "FIRKIN_DISK_RESERVE_MB", default_value_t = 1024)]
    pub disk_reserve_mb: u32,
    /// Processes and threads the sandbox's user may have at once (RLIMIT_NPROC inside the
    /// sandbox; a fork bomb fails there and the sandbox lives on). Default: one per 2 MiB of
    /// the sandbox's memory (256 for 512 MiB).
    #[arg(long, env = "FIRKIN_MAX_PROCESSES", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_processes: Option<u32>,
    /// Sandbox internet egress (NAT through the host's routing table): `on` (as in E2B) or `off`
    /// (no sandbox reaches anything beyond this host's firkin services).
    #[arg(long, env = "FIRKIN_EGRESS", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub egress: bool,
    /// Resolvers firkin's DNS forwarder asks for sandboxes: `ADDR[,ADDR]` (port 53, or
    /// `ADDR:PORT`). Default: the host's, from /etc/resolv.conf (loopback ones work too).
    #[arg(long, env = "FIRKIN_DNS", value_parser = parse_dns)]
    pub dns: Option<DnsServers>,
    /// Concurrent egress connections per sandbox (new ones past it are refused).
    #[arg(long, env = "FIRKIN_MAX_EGRESS_CONNECTIONS", default_value_t = 2500)]
    pub max_egress_connections: u32,
    /// Seconds without an answer from a running sandbox's agent before it is killed as stuck.
    #[arg(long, env = "FIRKIN_STUCK_AFTER_SECS", default_value_t = 60)]
    pub stuck_after_secs: u64,
}

fn apply_capacity(
    mut cap: firkin_core::admission::Resources,
    spec: &str,
) -> anyhow::Result<firkin_core::admission::Resources> {
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) =
            part.split_once('=').with_context(|| format!("--capacity: expected key=N, got {part:?}"))?;
        let v: u64 = v.trim().parse().with_context(|| format!("--capacity: {part:?}"))?;
        match k.trim() {
            "cpu" => cap.milli_cpu = v,
            "memory" => cap.memory_mb = v,
            "disk" => cap.disk_mb = v,
            other => anyhow::bail!("--capacity: unknown resource {other:?} (cpu, memory, disk)"),
        }
    }
    Ok(cap)
}

fn parse_floors(s: &str) -> Result<firkin_core::runtime::disk::DiskFloors, String> {
    let mut f = firkin_core::runtime::disk::DiskFloors::default();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("expected op=MiB, got {part:?}"))?;
        let v: u64 = v.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
        match k.trim() {
            "restore" => f.restore_mb = v,
            "snapshot" => f.snapshot_mb = v,
            "warm" => f.warm_mb = v,
            other => return Err(format!("unknown floor {other:?} (restore, snapshot, warm)")),
        }
    }
    Ok(f)
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

/// The `--dns` list.
#[derive(Debug, Clone)]
pub struct DnsServers(pub Vec<std::net::SocketAddr>);

/// Parses `ADDR[,ADDR]`, each an IP address with an optional port (default 53).
fn parse_dns(s: &str) -> Result<DnsServers, String> {
    let list: Result<Vec<_>, String> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<std::net::SocketAddr>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                .map_err(|_| format!("{p:?} is not an IP address (or ADDR:PORT)"))
        })
        .collect();
    let list = list?;
    if list.is_empty() {
        return Err("expected at least one resolver address".into());
    }
    Ok(DnsServers(list))
}

/// Parses `base=2,code-interpreter-v1=1` (or `none` / empty).
fn parse_warm_pool(s: &str) -> Result<std::collections::BTreeMap<String, usize>, String> {
    let mut out = std::collections::BTreeMap::new();
    if s.trim().is_empty() || s.trim() == "none" {
        return Ok(out);
    }
    for part in s.split(',') {
        let (name, n) = part.split_once('=').ok_or_else(|| format!("expected template=N, got {part:?}"))?;
        let n: usize = n.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
        if n > 64 {
            return Err(format!("{part:?}: at most 64 warm sandboxes per template"));
        }
        out.insert(name.trim().to_owned(), n);
    }
    Ok(out)
}

impl HostArgs {
    pub fn agent_path(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.agent {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .context("locating this executable")?
                .parent()
                .map(|d| d.join("firkin-agent"))
                .context("executable has no parent directory")?,
        };
        anyhow::ensure!(
            path.is_file(),
            "agent binary not found at {} (build it or pass --agent)",
            path.display()
        );
        Ok(std::fs::canonicalize(&path)?)
    }

    /// Builds the runtime on the real engine and network, reporting `domain` as the sandbox
    /// domain. Call from within a tokio runtime.
    pub fn runtime(&self, domain: Option<String>) -> anyhow::Result<Runtime> {
        let layout = Layout::from_env();
        let mut config = RuntimeConfig::new(layout.clone(), self.agent_path()?);
        config.domain = domain;
        config.runsc_path = self.runsc.clone();
        config.warm_pool = self.warm_pool.clone();
        config.disk_floors = self.disk_floors;
        anyhow::ensure!(
            firkin_core::template::spec::DISK_SIZE_MB.contains(&self.disk_size_mb),
            "--disk-size-mb must be {}..={}",
            firkin_core::template::spec::DISK_SIZE_MB.start(),
            firkin_core::template::spec::DISK_SIZE_MB.end()
        );
        config.disk_size_mb = self.disk_size_mb;
        config.disk_reserve_mb = self.disk_reserve_mb;
        config.max_processes = self.max_processes;
        config.stuck_after = std::time::Duration::from_secs(self.stuck_after_secs.max(1));
        if let Some(spec) = &self.capacity {
            config.capacity = apply_capacity(config.capacity, spec)?;
        }
        let engine = Arc::new(RunscEngine::new(self.runsc.clone(), layout.runsc_root(), layout.disks_dir()));
        // runsc leaves its sandbox processes orphaned; reap them promptly (fast `runsc delete`).
        firkin_core::engine::reaper::adopt_runsc_orphans();
        let opts = NetOptions {
            egress: self.egress,
            dns: self.dns.clone().map(|d| d.0),
            max_connections: self.max_egress_connections,
        };
        let network = Arc::new(NetnsNetwork::new(self.subnet_base, &layout.state_dir, opts));
        Ok(Runtime::new(config, engine, network))
    }
}
