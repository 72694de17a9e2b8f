//! Content digests of files: the SHA-256 that artifact integrity records, rootfs identities and
//! the agent build identity are made of. A leaf module, so the stores that use it (snapshots,
//! templates, the runtime) do not depend on each other for it.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// SHA-256 (hex) of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}
