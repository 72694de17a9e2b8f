//! The sandbox's boot identity, `/proc/sys/kernel/random/boot_id`, made per sandbox.
//!
//! gVisor draws the boot id once, when `runsc` boots the sandbox, and a checkpoint keeps it: every
//! sandbox restored from one template (or snapshot) would report the template build's boot id,
//! so programs that key state on it (journals, caches, licence and telemetry ids) would take
//! them all for one machine. gVisor lets PID 1 bind mount a file over the proc entry (measured
//! with runsc 20240729: `mount --bind` over it works, a read-only remount makes it unwritable
//! even for root's `open(O_WRONLY)`, the mount is checkpointed with the sandbox, and after a
//! restore it can be unmounted and replaced). No runsc flag or OCI field sets the boot id, and
//! gVisor draws it once per boot and keeps it in the checkpoint.
//!
//! Mounting needs `CAP_SYS_ADMIN`, which the sandbox's processes must not get. So the sandbox
//! spec grants it (to PID 1, the agent) and the agent, first thing, before any thread exists
//! (capabilities are per thread), keeps it to itself: [`confine_mount_capability`] drops it
//! from its bounding, inheritable and ambient sets, so no program it executes — `sudo` and
//! root commands included — gains it (measured in gVisor: a root child then shows exactly the
//! Docker default set and its `mount`/`umount` fail with EPERM). It also leaves the effective
//! set, so it is raised only on the thread that mounts, for the mount: an effective
//! `CAP_SYS_ADMIN` exempts a process from `RLIMIT_NPROC`, and the agent's spawns of the user's
//! commands must stay charged to (and refused by) the user's process limit. Without the
//! capability (a spec that does not grant it) the sandbox keeps its source's boot id and the
//! agent logs why.
//!
//! So at `/init` for a sandbox id other than the one the current boot id was made for, the
//! agent writes a fresh random (version 4) UUID to [`BOOT_ID_FILE`] and bind mounts it,
//! read-only, over [`PROC_BOOT_ID`], replacing any earlier such mount (a template's or a
//! snapshot source's). Every create, fork or snapshot restore carries a new sandbox id, so each
//! gets its own boot id. A resume of a paused sandbox keeps its id, and so its boot id: it
//! continues the same running system (same processes, same memory), as a VM memory snapshot's
//! resume does, and nothing rebooted. Only as PID 1 (inside a sandbox): a test run on a host
//! must not touch the host's `/proc` mounts.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The proc entry the boot id is read from.
pub const PROC_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// The file bind mounted over it.
pub const BOOT_ID_FILE: &str = "/run/firkin/boot_id";

/// The sandbox id the boot id in force was made for; in agent memory, so it is checkpointed and
/// restored with the mount it describes.
static MADE_FOR: Mutex<Option<String>> = Mutex::new(None);
/// Whether [`confine_mount_capability`] found `CAP_SYS_ADMIN` and kept it.
static CAN_MOUNT: AtomicBool = AtomicBool::new(false);

/// Gives the sandbox `sandbox_id` its own boot id unless it already has one. Best effort: a
/// failure is logged (the sandbox then reports its source's boot id) and retried at the next
/// `/init`.
pub fn refresh_for(sandbox_id: &str) {
    if std::process::id() != 1 || !CAN_MOUNT.load(Ordering::Relaxed) {
        return;
    }
    let mut made_for = MADE_FOR.lock().unwrap_or_else(|e| e.into_inner());
    if made_for.as_deref() == Some(sandbox_id) {
        return;
    }
    let id = random_uuid();
    match with_admin(|| replace(Path::new(BOOT_ID_FILE), Path::new(PROC_BOOT_ID), &id)) {
        Ok(()) => {
            tracing::info!(boot_id = %id, "boot id made for this sandbox");
            *made_for = Some(sandbox_id.to_owned());
        }
        Err(e) => tracing::warn!(error = %e, "cannot give the sandbox its own boot id"),
    }
}

/// `CAP_SYS_ADMIN`'s number.
const CAP_SYS_ADMIN: u32 = 21;
/// `_LINUX_CAPABILITY_VERSION_3` (64-bit sets, two data words).
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Keeps `CAP_SYS_ADMIN` (if this process has it) to this thread and those it creates: drops
/// it from the ambient, bounding and inheritable sets, so programs executed from here never
/// gain it. Call first thing in `main`, before any other thread exists; only as PID 1. Returns
/// whether the agent holds it (can make boot ids).
pub fn confine_mount_capability() -> bool {
    let bit = 1u32 << CAP_SYS_ADMIN;
    let mut hdr = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes one header and two data words, which both pointers hold.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "capget failed");
        return false;
    }
    let held = data[0].permitted & bit != 0;
    // Lowering the inheritable set also clears the ambient one (Linux); the bounding set limits
    // what any later exec can gain. Permitted only: raised for each mount (see `with_admin`).
    data[0].inheritable &= !bit;
    data[0].effective &= !bit;
    // SAFETY: capset reads one header and two data words, which both pointers hold.
    let set = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    let set = (set == 0).then_some(()).ok_or_else(std::io::Error::last_os_error);
    // SAFETY: prctl with integer arguments only.
    let bounding = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_ADMIN as libc::c_ulong, 0, 0, 0) };
    let bounding = (bounding == 0).then_some(()).ok_or_else(std::io::Error::last_os_error);
    // SAFETY: prctl with integer arguments only.
    let ambient = unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_LOWER, CAP_SYS_ADMIN as libc::c_ulong, 0, 0)
    };
    // EINVAL: no ambient sets here (gVisor 20240729 has none), so none to pass on.
    let ambient = match (ambient == 0).then_some(()).ok_or_else(std::io::Error::last_os_error) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    };
    if let Err(e) = set.and(bounding).and(ambient) {
        // A child could gain the capability: do not keep it either.
        tracing::error!(error = %e, "cannot confine CAP_SYS_ADMIN; dropping it");
        data[0].effective &= !bit;
        data[0].permitted &= !bit;
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
        return false;
    }
    if !held {
        tracing::warn!("no CAP_SYS_ADMIN: sandboxes keep their checkpoint's boot id");
    }
    CAN_MOUNT.store(held, Ordering::Relaxed);
    held
}

/// Runs `f` with `CAP_SYS_ADMIN` effective on this thread, lowered again after (capabilities
/// are per thread: no other thread of the agent holds it meanwhile).
fn with_admin<T>(f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    fn set(on: bool) -> std::io::Result<()> {
        let mut hdr = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget writes one header and two data words, which both pointers hold.
        if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let bit = 1u32 << CAP_SYS_ADMIN;
        data[0].effective = if on { data[0].effective | bit } else { data[0].effective & !bit };
        // SAFETY: capset reads one header and two data words, which both pointers hold.
        if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    set(true)?;
    let out = f();
    if let Err(e) = set(false) {
        tracing::error!(error = %e, "cannot lower CAP_SYS_ADMIN after a mount");
    }
    out
}

/// A random version-4 UUID in the kernel's format (lower-case hex, 8-4-4-4-12).
pub fn random_uuid() -> String {
    // From the OS, not a user-space generator: that one's state is in the checkpoint, so every
    // copy restored from it would draw the same "random" id.
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Writes `id` to a new `file` (a new inode: an earlier mount keeps showing the old one until it
/// is gone), removes earlier mounts over `target` and bind mounts `file` there read-only.
fn replace(file: &Path, target: &Path, id: &str) -> std::io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = file.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".boot_id.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(format!("{id}\n").as_bytes())?;
    f.set_permissions(std::fs::Permissions::from_mode(0o444))?;
    std::fs::rename(&tmp, file)?;
    // Unmounting what is not a mount point fails (EINVAL): then only the proc entry is left.
    // Bounded, in case something else keeps answering.
    for _ in 0..8 {
        if umount2(target, MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    let none: Option<&str> = None;
    mount(Some(file), target, none, MsFlags::MS_BIND, none)?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(none, target, none, ro, none)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_the_kernels_and_differ() {
        let a = random_uuid();
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(parts[2].starts_with('4'), "version 4: {a}");
        assert!("89ab".contains(&parts[3][..1]), "RFC 4122 variant: {a}");
        assert_ne!(a, random_uuid());
    }
}
