//! Resolving request paths the way envd does: `~` and relative paths are taken against the
//! user's home directory, and the result is lexically cleaned (no symlinks are followed).

use std::path::{Component, Path, PathBuf};

/// Resolves `raw` for a user whose home is `home`.
pub fn resolve(raw: &str, home: &Path) -> PathBuf {
    let joined = if raw.is_empty() || raw == "~" {
        home.to_path_buf()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        home.join(rest)
    } else if raw.starts_with('/') {
        PathBuf::from(raw)
    } else {
        home.join(raw)
    };
    clean(&joined)
}

/// Lexically normalises an absolute path: drops `.`, resolves `..`, collapses separators.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_home_relative_and_absolute() {
        let home = Path::new("/home/user");
        assert_eq!(resolve("", home), PathBuf::from("/home/user"));
        assert_eq!(resolve("~", home), PathBuf::from("/home/user"));
        assert_eq!(resolve("~/a/b", home), PathBuf::from("/home/user/a/b"));
        assert_eq!(resolve("a/./b", home), PathBuf::from("/home/user/a/b"));
        assert_eq!(resolve("../x", home), PathBuf::from("/home/x"));
        assert_eq!(resolve("/tmp//x/../y/", home), PathBuf::from("/tmp/y"));
        assert_eq!(resolve("/../..", home), PathBuf::from("/"));
    }
}
