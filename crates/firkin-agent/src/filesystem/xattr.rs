//! File metadata stored as `user.e2b.<key>` extended attributes (never following symlinks).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Prefix of the xattrs that carry E2B file metadata.
pub const PREFIX: &str = "user.e2b.";

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn list_names(path: &CString) -> io::Result<Vec<u8>> {
    // SAFETY: a null buffer with size 0 asks only for the required length.
    let len = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    if buf.is_empty() {
        return Ok(buf);
    }
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let len = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(usize::try_from(len).unwrap_or(0));
    Ok(buf)
}

fn get(path: &CString, name: &CString) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for `buf.len()` bytes; both strings are NUL-terminated.
    let len = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(usize::try_from(len).unwrap_or(0));
    Ok(buf)
}

/// Reads the E2B metadata of `path` (prefix stripped). Unsupported filesystems yield nothing.
pub fn read_metadata(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(cpath) = c_path(path) else {
        return out;
    };
    let Ok(names) = list_names(&cpath) else {
        return out;
    };
    for raw in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        let Some(key) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Ok(cname) = CString::new(raw) else {
            continue;
        };
        if let Ok(value) = get(&cpath, &cname) {
            out.insert(key.to_string(), String::from_utf8_lossy(&value).into_owned());
        }
    }
    out
}

/// Sets `user.e2b.<key>` = `value` on `path`.
pub fn set(path: &Path, key: &str, value: &str) -> io::Result<()> {
    let cpath = c_path(path)?;
    let cname =
        CString::new(format!("{PREFIX}{key}")).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all pointers are valid for the given lengths during the call.
    let rc =
        unsafe { libc::lsetxattr(cpath.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
