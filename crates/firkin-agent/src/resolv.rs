//! The sandbox's DNS configuration: at every `/init` (so also after each restore, which puts the
//! sandbox behind another gateway than the template build's), `/etc/resolv.conf` is pointed at
//! the sandbox's default gateway, read from the default route in `/proc/net/route` (gVisor's
//! netstack serves it). The host answers every port-53 query from a sandbox with its own
//! forwarder, so the gateway is an honest address for a resolver.
//!
//! The file is (re)written only when it is missing, names no resolver other than loopback ones
//! (an empty file, the base rootfs's; or a stub resolver's `127.0.0.53`, which nothing serves in
//! a sandbox), or was written by this agent (its first line is [`MARKER`]). A template's own
//! non-loopback resolv.conf is left alone. Lines other than `nameserver` lines (`search`,
//! `options`, comments) are kept. Only as PID 1 (inside a sandbox): a test run on a host must
//! not touch the host's resolver configuration.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// First line of a resolv.conf this agent wrote.
pub const MARKER: &str = "# written by firkin-agent";
const RESOLV_CONF: &str = "/etc/resolv.conf";
const ROUTES: &str = "/proc/net/route";

/// Points `/etc/resolv.conf` at the default gateway when the policy above allows. Best effort:
/// what fails is logged.
pub fn refresh() {
    if std::process::id() != 1 {
        return;
    }
    let gateway = match std::fs::read_to_string(ROUTES) {
        Ok(text) => parse_default_gateway(&text),
        Err(e) => {
            tracing::warn!(path = ROUTES, error = %e, "cannot read the routing table; resolv.conf left alone");
            return;
        }
    };
    let Some(gateway) = gateway else {
        tracing::warn!("no default route; resolv.conf left alone");
        return;
    };
    if let Err(e) = apply(Path::new(RESOLV_CONF), gateway) {
        tracing::warn!(path = RESOLV_CONF, error = %e, "cannot write resolv.conf");
    }
}

/// Rewrites `path` for `gateway` if [`rewrite`] says so; returns whether it wrote.
fn apply(path: &Path, gateway: Ipv4Addr) -> std::io::Result<bool> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Not UTF-8 or unreadable: not ours to judge.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(false),
        Err(e) => return Err(e),
    };
    let Some(text) = rewrite(existing.as_deref(), gateway) else {
        return Ok(false);
    };
    write_atomically(path, text.as_bytes())?;
    tracing::info!(nameserver = %gateway, "resolv.conf points at the sandbox's gateway");
    Ok(true)
}

/// Replaces `path` (a file, or a dangling stub-resolver symlink) with `data`, mode 0644: temp
/// file and rename, or, when `path` cannot be renamed over (a mount point), in place.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(".resolv.conf.firkin-agent.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(error = %e, "rename over resolv.conf failed; writing in place");
        std::fs::write(path, data)?;
    }
    Ok(())
}

/// The gateway of the default IPv4 route in a `/proc/net/route` table (the first, if several).
pub fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(3)?)?, hex(f.get(7)?)?);
        let default = dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
        // The kernel prints the address's network-order bytes as a native-endian number.
        (default && gw != 0).then(|| Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

/// The new resolv.conf for `gateway` given the current one (`None`: missing), or `None` when it
/// must be left as it is (a user's non-loopback configuration, or already right).
pub fn rewrite(existing: Option<&str>, gateway: Ipv4Addr) -> Option<String> {
    let text = existing.unwrap_or("");
    let ours = text.lines().next().is_some_and(|l| l.trim() == MARKER);
    let is_nameserver = |l: &str| l.split_whitespace().next() == Some("nameserver");
    let foreign_resolver = text.lines().filter(|l| is_nameserver(l)).any(|l| {
        let addr = l.split_whitespace().nth(1).and_then(|a| a.parse::<IpAddr>().ok());
        !addr.is_some_and(|a| a.is_loopback())
    });
    if foreign_resolver && !ours {
        return None;
    }
    let mut out = format!("{MARKER}\nnameserver {gateway}\n");
    for line in text.lines().filter(|l| !is_nameserver(l) && l.trim() != MARKER) {
        if !line.trim().is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    (existing != Some(out.as_str())).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 218, 0, 1);

    #[test]
    fn the_default_routes_gateway_is_found() {
        // Linux's format on a little-endian machine: 10.218.0.1 is printed as 0100DA0A.
        let gw = u32::from_ne_bytes([10, 218, 0, 1]);
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t0000DA0A\t00000000\t0001\t0\t0\t0\t00FCFFFF\t0\t0\t0\n\
             eth0\t00000000\t{gw:08X}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(parse_default_gateway(&table), Some(GW));
        assert_eq!(
            parse_default_gateway(table.lines().take(2).collect::<Vec<_>>().join("\n").as_str()),
            None
        );
        assert_eq!(parse_default_gateway(""), None);
        assert_eq!(parse_default_gateway("Iface\tDestination\neth0 garbage\n"), None);
    }

    #[test]
    fn empty_missing_loopback_and_own_files_are_rewritten() {
        let want = format!("{MARKER}\nnameserver 10.218.0.1\n");
        assert_eq!(rewrite(None, GW).as_deref(), Some(want.as_str()));
        assert_eq!(rewrite(Some(""), GW).as_deref(), Some(want.as_str()));
        assert_eq!(
            rewrite(Some("\n# nothing\n"), GW).as_deref(),
            Some(format!("{want}# nothing\n").as_str())
        );
        let stub = "nameserver 127.0.0.53\nnameserver ::1\noptions edns0 trust-ad\nsearch .\n";
        let kept = format!("{want}options edns0 trust-ad\nsearch .\n");
        assert_eq!(rewrite(Some(stub), GW).as_deref(), Some(kept.as_str()));
        // The template build's gateway, written by us: replaced, user additions kept.
        let old = format!("{MARKER}\nnameserver 10.210.0.1\nsearch corp.test\n");
        let new = format!("{want}search corp.test\n");
        assert_eq!(rewrite(Some(&old), GW).as_deref(), Some(new.as_str()));
        assert_eq!(rewrite(Some(&new), GW), None, "already right: not rewritten");
    }

    #[test]
    fn a_users_resolver_is_left_alone() {
        assert_eq!(rewrite(Some("nameserver 192.0.2.53\n"), GW), None);
        assert_eq!(rewrite(Some("nameserver 127.0.0.1\nnameserver 2001:db8::53\n"), GW), None);
        assert_eq!(rewrite(Some("# mine\nnameserver 10.0.0.2\n"), GW), None);
        assert_eq!(
            rewrite(Some("nameserver resolver.example\n"), GW),
            None,
            "not an address: not ours to judge"
        );
    }

    #[test]
    fn apply_writes_a_missing_file_and_keeps_a_users() {
        let dir = std::env::temp_dir().join(format!("firkin-agent-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        let _ = std::fs::remove_file(&path);
        assert!(apply(&path, GW).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{MARKER}\nnameserver 10.218.0.1\n"));
        assert!(!apply(&path, GW).unwrap(), "unchanged");
        std::fs::write(&path, "nameserver 192.0.2.53\n").unwrap();
        assert!(!apply(&path, GW).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.53\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
