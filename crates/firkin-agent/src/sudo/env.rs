//! The environment and command line sudo gives a command, as Debian's sudo does with its
//! default `env_reset` and `secure_path`. Pure: every input is passed in.
//!
//! - Reset (the default, and always with `-i`): only a small set of the caller's variables is
//!   kept ([`KEPT`], and [`KEPT_IF_SAFE`] unless the value holds `/` or `%`), plus any named
//!   with `--preserve-env=LIST`; `HOME`, `SHELL` and `MAIL` are the target user's.
//! - `-E`: all of the caller's variables; `HOME`, `SHELL` and `MAIL` stay the caller's (`-H`
//!   makes `HOME` the target's).
//! - Always: `PATH` is [`SECURE_PATH`] (Debian's `secure_path`, which wins even over `-E`),
//!   `USER` and `LOGNAME` name the target user, `SUDO_USER`, `SUDO_UID`, `SUDO_GID` the caller
//!   and `SUDO_COMMAND` the command; `VAR=value` words from the command line come last.

use std::collections::BTreeMap;

use super::options::PreserveEnv;

/// `PATH` of every command run through sudo (Debian's `secure_path`).
pub const SECURE_PATH: &str = crate::process::spawn::DEFAULT_PATH;

/// Variables kept from the caller's environment in reset mode.
pub const KEPT: &[&str] = &[
    "COLORS",
    "DISPLAY",
    "HOSTNAME",
    "KRB5CCNAME",
    "LS_COLORS",
    "PS1",
    "PS2",
    "XAUTHORITY",
    "XAUTHORIZATION",
];

/// Variables kept in reset mode when their value holds neither `/` nor `%` (`LC_*` too).
pub const KEPT_IF_SAFE: &[&str] = &["COLORTERM", "LANG", "LANGUAGE", "LINGUAS", "TERM", "TZ"];

/// Who asked (from the socket's peer credentials, never from the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub name: &'a str,
    pub home: &'a str,
    pub shell: &'a str,
}

/// Everything the environment of a command depends on.
pub struct EnvPlan<'a> {
    pub caller_env: &'a [(String, String)],
    pub caller: &'a Caller,
    pub target: Target<'a>,
    pub preserve: &'a PreserveEnv,
    pub set_home: bool,
    /// `-i`: always a reset environment.
    pub login: bool,
    /// `SUDO_COMMAND`.
    pub command_line: &'a str,
    pub assignments: &'a [(String, String)],
}

fn kept_in_reset_mode(name: &str, value: &str) -> bool {
    let safe = !value.contains('/') && !value.contains('%');
    KEPT.contains(&name) || (safe && (KEPT_IF_SAFE.contains(&name) || name.starts_with("LC_")))
}

/// The command's environment.
pub fn build(plan: &EnvPlan<'_>) -> BTreeMap<String, String> {
    let everything = matches!(plan.preserve, PreserveEnv::All) && !plan.login;
    let named: &[String] = match plan.preserve {
        PreserveEnv::Vars(v) if !plan.login => v,
        _ => &[],
    };
    let mut env: BTreeMap<String, String> = plan
        .caller_env
        .iter()
        .filter(|(k, v)| everything || kept_in_reset_mode(k, v) || named.contains(k))
        .cloned()
        .collect();
    let target = &plan.target;
    let mut set_target = |key: &str, value: String, override_kept: bool| {
        if override_kept || !env.contains_key(key) {
            env.insert(key.to_string(), value);
        }
    };
    set_target("HOME", target.home.to_string(), !everything || plan.set_home);
    set_target("SHELL", target.shell.to_string(), !everything);
    set_target("MAIL", format!("/var/mail/{}", target.name), !everything);
    env.insert("PATH".into(), SECURE_PATH.into());
    env.insert("USER".into(), target.name.to_string());
    env.insert("LOGNAME".into(), target.name.to_string());
    env.insert("SUDO_USER".into(), plan.caller.name.clone());
    env.insert("SUDO_UID".into(), plan.caller.uid.to_string());
    env.insert("SUDO_GID".into(), plan.caller.gid.to_string());
    env.insert("SUDO_COMMAND".into(), plan.command_line.to_string());
    env.extend(plan.assignments.iter().cloned());
    env
}

/// The words of a command joined into one string for `SHELL -c` (`-s` and `-i`): every
/// character other than an ASCII letter or digit, `_`, `-` or `$` is escaped with a backslash,
/// so the shell sees the words the caller passed (variables still expand).
pub fn shell_command(words: &[String]) -> String {
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for c in word.chars() {
            if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$')) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// `SUDO_COMMAND`: the program that runs and its arguments, space-separated.
pub fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller_env() -> Vec<(String, String)> {
        [
            ("TERM", "xterm-256color"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "/etc/evil"),
            ("LC_TIME", "en_GB.UTF-8"),
            ("PS1", "$ "),
            ("HOME", "/home/user"),
            ("SHELL", "/bin/zsh"),
            ("PATH", "/home/user/bin:/usr/bin"),
            ("MYVAR", "kept"),
            ("OTHER", "x"),
            ("SUDO_USER", "stale"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn plan<'a>(
        env: &'a [(String, String)],
        caller: &'a Caller,
        preserve: &'a PreserveEnv,
        assignments: &'a [(String, String)],
    ) -> EnvPlan<'a> {
        EnvPlan {
            caller_env: env,
            caller,
            target: Target { name: "root", home: "/root", shell: "/bin/bash" },
            preserve,
            set_home: false,
            login: false,
            command_line: "/usr/bin/id -u",
            assignments,
        }
    }

    fn caller() -> Caller {
        Caller { name: "user".into(), uid: 1000, gid: 1000 }
    }

    #[test]
    fn reset_keeps_only_the_safe_set() {
        let (env, caller) = (caller_env(), caller());
        let out = build(&plan(&env, &caller, &PreserveEnv::Reset, &[]));
        let expected: BTreeMap<String, String> = [
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "en_GB.UTF-8"),
            ("LOGNAME", "root"),
            ("MAIL", "/var/mail/root"),
            ("PATH", SECURE_PATH),
            ("PS1", "$ "),
            ("SHELL", "/bin/bash"),
            ("SUDO_COMMAND", "/usr/bin/id -u"),
            ("SUDO_GID", "1000"),
            ("SUDO_UID", "1000"),
            ("SUDO_USER", "user"),
            ("TERM", "xterm-256color"),
            ("USER", "root"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn preserve_all_keeps_the_callers_but_not_path() {
        let (env, caller) = (caller_env(), caller());
        let out = build(&plan(&env, &caller, &PreserveEnv::All, &[]));
        assert_eq!(out["MYVAR"], "kept");
        assert_eq!(out["LC_ALL"], "/etc/evil");
        assert_eq!(out["HOME"], "/home/user");
        assert_eq!(out["SHELL"], "/bin/zsh");
        assert_eq!(out["MAIL"], "/var/mail/root", "the caller had none");
        assert_eq!(out["PATH"], SECURE_PATH);
        assert_eq!(out["USER"], "root");
        assert_eq!(out["SUDO_USER"], "user");
        let mut with_h = plan(&env, &caller, &PreserveEnv::All, &[]);
        with_h.set_home = true;
        assert_eq!(build(&with_h)["HOME"], "/root");
    }

    #[test]
    fn named_vars_login_and_assignments() {
        let (env, caller) = (caller_env(), caller());
        let named = PreserveEnv::Vars(vec!["MYVAR".into(), "ABSENT".into()]);
        let out = build(&plan(&env, &caller, &named, &[]));
        assert_eq!(out["MYVAR"], "kept");
        assert!(!out.contains_key("OTHER") && !out.contains_key("ABSENT"));
        let mut login = plan(&env, &caller, &PreserveEnv::All, &[]);
        login.login = true;
        let out = build(&login);
        assert!(!out.contains_key("MYVAR"), "-i resets even with -E");
        assert_eq!(out["HOME"], "/root");
        let set = [("PATH".to_string(), "/opt/bin".to_string()), ("X".to_string(), "1".to_string())];
        let out = build(&plan(&env, &caller, &PreserveEnv::Reset, &set));
        assert_eq!((out["PATH"].as_str(), out["X"].as_str()), ("/opt/bin", "1"));
    }

    #[test]
    fn shell_command_escapes_all_but_words_and_variables() {
        let words: Vec<String> = ["echo", "a b", "$HOME", "it's;x", "-n_1"].map(String::from).to_vec();
        assert_eq!(shell_command(&words), r"echo a\ b $HOME it\'s\;x -n_1");
        assert_eq!(shell_command(&[]), "");
        assert_eq!(command_line("/bin/bash", &["-c".into(), "ls".into()]), "/bin/bash -c ls");
        assert_eq!(command_line("/usr/bin/id", &[]), "/usr/bin/id");
    }
}
