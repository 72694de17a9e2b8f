//! sudo's command line, parsed into what the caller asked for ([`Invocation`]). Pure: no I/O.
//!
//! Accepted: `-u USER` / `--user=USER` (a name or `#UID`), `-E` / `--preserve-env`,
//! `--preserve-env=VAR,…`, `-H` / `--set-home`, `-i` / `--login`, `-s` / `--shell`, `-n` /
//! `--non-interactive`, `-S` / `--stdin` and `-p PROMPT` / `--prompt=PROMPT` (no password is
//! ever asked for, so there is nothing to read or prompt), `-k` / `--reset-timestamp` (alone or
//! before a command), `-K` / `--remove-timestamp` and `-v` / `--validate` (no-ops: there are no
//! cached credentials), `-l` / `--list`, `-h` / `--help` (alone), `-V` / `--version`, `--`,
//! short flags combined (`-nE`, `-uroot`), and `VAR=value` words before the command (set for
//! it, as sudoers allows for `ALL`). Options stop at the first word that is not one, as with
//! sudo. Any other option is an [`OptionError::Unsupported`] naming it: never ignored.

use serde::{Deserialize, Serialize};

/// Which of the caller's environment variables the command keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PreserveEnv {
    /// sudo's `env_reset`: a small safe set only.
    #[default]
    Reset,
    /// `-E`: all of them.
    All,
    /// `--preserve-env=A,B`: the safe set plus these.
    Vars(Vec<String>),
}

/// Whether the command runs through a shell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ShellMode {
    /// The command itself.
    #[default]
    Direct,
    /// `-s`: the caller's shell, with `-c COMMAND` when a command is given.
    Shell,
    /// `-i`: the target user's login shell in their home, with `-c COMMAND` when given.
    Login,
}

/// What to run and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    /// `-u`: a user name or `#UID`; `None` is root.
    pub user: Option<String>,
    pub preserve_env: PreserveEnv,
    /// `-H`: `HOME` is the target user's even with `-E`.
    pub set_home: bool,
    pub shell: ShellMode,
    /// `VAR=value` words before the command.
    pub assignments: Vec<(String, String)>,
    pub command: Vec<String>,
}

/// What a sudo command line asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Invocation {
    Run(RunOptions),
    /// `-l [command]`: what the caller may run (or whether it may run `command`).
    List(RunOptions),
    /// `-v`.
    Validate,
    /// `-k` or `-K` without a command.
    ResetTimestamp,
    Help,
    Version,
}

/// Why a command line was refused. sudo exits with status 1 for each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error(
        "option '{0}' is not supported by this sandbox's sudo (it runs commands through the firkin \
         agent); supported: -u USER, -E, --preserve-env[=LIST], -H, -i, -s, -n, -S, -p PROMPT, -k, \
         -K, -v, -l, -h, -V, --"
    )]
    Unsupported(String),
    #[error("option '{0}' requires an argument")]
    MissingValue(String),
    #[error("option '{0}' does not take an argument")]
    UnexpectedValue(String),
    #[error("you may not specify both the -i and -s options")]
    LoginAndShell,
    #[error("option '{0}' cannot be followed by a command")]
    NoCommandAllowed(&'static str),
    #[error("no command given\n{}", USAGE.trim_end())]
    NoCommand,
}

/// The usage text of `sudo -h` (and of a command line without a command).
pub const USAGE: &str = "\
usage: sudo -h | -K | -k | -V | -v
usage: sudo -l [-u user] [command]
usage: sudo [-EHnS] [-i | -s] [-u user] [-p prompt] [--preserve-env=LIST] [VAR=value] [--] command
";

/// Everything the options said, before it is turned into an [`Invocation`].
#[derive(Default)]
struct Flags {
    run: RunOptions,
    list: bool,
    validate: bool,
    reset: bool,
    remove: bool,
    help: bool,
    version: bool,
    login: bool,
    shell: bool,
}

/// Parses sudo's arguments (without `argv[0]`).
pub fn parse(args: &[String]) -> Result<Invocation, OptionError> {
    if args.len() == 1 && args[0] == "-h" {
        return Ok(Invocation::Help);
    }
    let mut flags = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            long_option(&mut flags, name, value, args, &mut i)?;
        } else if arg.len() > 1 && arg.starts_with('-') {
            short_cluster(&mut flags, &arg[1..], args, &mut i)?;
        } else {
            i -= 1;
            break;
        }
    }
    let mut rest = args[i..].iter();
    let mut command: Vec<String> = Vec::new();
    for word in rest.by_ref() {
        match assignment(word) {
            Some(pair) if command.is_empty() => flags.run.assignments.push(pair),
            _ => {
                command.push(word.clone());
                break;
            }
        }
    }
    command.extend(rest.cloned());
    flags.run.command = command;
    finish(flags)
}

/// `NAME=value` with a valid variable name.
fn assignment(word: &str) -> Option<(String, String)> {
    let (name, value) = word.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid =
        (first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name.to_string(), value.to_string()))
}

/// Handles one cluster of short flags (`nE`, `uroot`, `u`), taking an option's value from the
/// rest of the cluster or the next argument.
fn short_cluster(
    flags: &mut Flags,
    cluster: &str,
    args: &[String],
    i: &mut usize,
) -> Result<(), OptionError> {
    for (at, c) in cluster.char_indices() {
        match c {
            'E' => flags.run.preserve_env = PreserveEnv::All,
            'H' => flags.run.set_home = true,
            'i' => flags.login = true,
            's' => flags.shell = true,
            'n' | 'S' => {}
            'k' => flags.reset = true,
            'K' => flags.remove = true,
            'v' => flags.validate = true,
            'l' => flags.list = true,
            'V' => flags.version = true,
            'u' | 'p' => {
                let attached = &cluster[at + c.len_utf8()..];
                let value = if attached.is_empty() {
                    take_value(args, i, &format!("-{c}"))?
                } else {
                    attached.to_string()
                };
                if c == 'u' {
                    flags.run.user = Some(value);
                }
                return Ok(());
            }
            other => return Err(OptionError::Unsupported(format!("-{other}"))),
        }
    }
    Ok(())
}

/// The long options that take no value.
const LONG_FLAGS: &[&str] = &[
    "set-home",
    "login",
    "shell",
    "non-interactive",
    "stdin",
    "reset-timestamp",
    "remove-timestamp",
    "validate",
    "list",
    "help",
    "version",
];

/// Handles one long option (`name` without the dashes; `value` when given as `--name=value`).
fn long_option(
    flags: &mut Flags,
    name: &str,
    value: Option<String>,
    args: &[String],
    i: &mut usize,
) -> Result<(), OptionError> {
    let shown = format!("--{name}");
    if value.is_some() && LONG_FLAGS.contains(&name) {
        return Err(OptionError::UnexpectedValue(shown));
    }
    match name {
        "user" => flags.run.user = Some(value.map_or_else(|| take_value(args, i, &shown), Ok)?),
        "prompt" => {
            value.map_or_else(|| take_value(args, i, &shown), Ok)?;
        }
        "preserve-env" => {
            flags.run.preserve_env = match (value, &flags.run.preserve_env) {
                (None, _) | (_, PreserveEnv::All) => PreserveEnv::All,
                (Some(list), current) => {
                    let mut vars = match current {
                        PreserveEnv::Vars(v) => v.clone(),
                        _ => Vec::new(),
                    };
                    vars.extend(list.split(',').filter(|v| !v.is_empty()).map(str::to_string));
                    PreserveEnv::Vars(vars)
                }
            }
        }
        "set-home" => flags.run.set_home = true,
        "login" => flags.login = true,
        "shell" => flags.shell = true,
        "non-interactive" | "stdin" => {}
        "reset-timestamp" => flags.reset = true,
        "remove-timestamp" => flags.remove = true,
        "validate" => flags.validate = true,
        "list" => flags.list = true,
        "help" => flags.help = true,
        "version" => flags.version = true,
        _ => return Err(OptionError::Unsupported(shown)),
    }
    Ok(())
}

fn take_value(args: &[String], i: &mut usize, option: &str) -> Result<String, OptionError> {
    let value = args.get(*i).cloned().ok_or_else(|| OptionError::MissingValue(option.to_string()))?;
    *i += 1;
    Ok(value)
}

/// Turns the collected flags into what to do.
fn finish(flags: Flags) -> Result<Invocation, OptionError> {
    let Flags { mut run, list, validate, reset, remove, help, version, login, shell } = flags;
    let has_command = !run.command.is_empty();
    if help {
        return Ok(Invocation::Help);
    }
    if version {
        return Ok(Invocation::Version);
    }
    if login && shell {
        return Err(OptionError::LoginAndShell);
    }
    run.shell = if login {
        ShellMode::Login
    } else if shell {
        ShellMode::Shell
    } else {
        ShellMode::Direct
    };
    if remove || validate {
        let option = if remove { "-K" } else { "-v" };
        if has_command {
            return Err(OptionError::NoCommandAllowed(option));
        }
        return Ok(if remove { Invocation::ResetTimestamp } else { Invocation::Validate });
    }
    if list {
        return Ok(Invocation::List(run));
    }
    if !has_command && run.shell == ShellMode::Direct {
        return if reset { Ok(Invocation::ResetTimestamp) } else { Err(OptionError::NoCommand) };
    }
    Ok(Invocation::Run(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(line: &str) -> Result<Invocation, OptionError> {
        parse(&line.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    fn run(line: &str) -> RunOptions {
        match parse_words(line) {
            Ok(Invocation::Run(r)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn plain_command_runs_as_root_with_reset_env() {
        let r = run("whoami");
        assert_eq!(r, RunOptions { command: words("whoami"), ..RunOptions::default() });
    }

    #[test]
    fn options_stop_at_the_command() {
        let r = run("-u user ls -la -u");
        assert_eq!(r.user.as_deref(), Some("user"));
        assert_eq!(r.command, words("ls -la -u"));
        let r = run("-- -weird-name arg");
        assert_eq!(r.command, words("-weird-name arg"));
    }

    #[test]
    fn combined_and_attached_short_options() {
        let r = run("-nE id");
        assert_eq!(r.preserve_env, PreserveEnv::All);
        let r = run("-nHuuser id");
        assert!(r.set_home);
        assert_eq!(r.user.as_deref(), Some("user"));
        let r = run("-Enu #1000 id");
        assert_eq!(r.user.as_deref(), Some("#1000"));
        assert_eq!(r.preserve_env, PreserveEnv::All);
        assert_eq!(run("-S -p pw: true").command, words("true"));
    }

    #[test]
    fn long_options() {
        let r = run("--user=user --preserve-env --set-home --non-interactive id");
        assert_eq!(r.user.as_deref(), Some("user"));
        assert_eq!(r.preserve_env, PreserveEnv::All);
        assert!(r.set_home);
        assert_eq!(run("--user root id").user.as_deref(), Some("root"));
        let r = run("--preserve-env=A,B --preserve-env=C env");
        assert_eq!(r.preserve_env, PreserveEnv::Vars(words("A B C")));
        assert_eq!(run("--preserve-env=A -E env").preserve_env, PreserveEnv::All);
        assert_eq!(parse_words("--login=x"), Err(OptionError::UnexpectedValue("--login".into())));
    }

    #[test]
    fn shells() {
        assert_eq!(run("-i").shell, ShellMode::Login);
        assert_eq!(run("-s echo hi").shell, ShellMode::Shell);
        assert_eq!(run("--login ls").shell, ShellMode::Login);
        assert_eq!(parse_words("-is"), Err(OptionError::LoginAndShell));
    }

    #[test]
    fn assignments_before_the_command() {
        let r = run("-E DEBIAN_FRONTEND=noninteractive A_1=x=y apt-get B=2");
        assert_eq!(
            r.assignments,
            vec![("DEBIAN_FRONTEND".into(), "noninteractive".into()), ("A_1".into(), "x=y".into())]
        );
        assert_eq!(r.command, words("apt-get B=2"));
        assert_eq!(run("1A=x cmd").command, words("1A=x cmd"));
        assert_eq!(parse_words("A=1"), Err(OptionError::NoCommand));
    }

    #[test]
    fn no_op_and_informational_forms() {
        assert_eq!(parse_words("-v"), Ok(Invocation::Validate));
        assert_eq!(parse_words("-k"), Ok(Invocation::ResetTimestamp));
        assert_eq!(parse_words("-K"), Ok(Invocation::ResetTimestamp));
        assert_eq!(run("-k whoami").command, words("whoami"));
        assert_eq!(parse_words("-h"), Ok(Invocation::Help));
        assert_eq!(parse_words("--help"), Ok(Invocation::Help));
        assert_eq!(parse_words("-V"), Ok(Invocation::Version));
        assert_eq!(parse_words("-l"), Ok(Invocation::List(RunOptions::default())));
        match parse_words("-l ls") {
            Ok(Invocation::List(r)) => assert_eq!(r.command, words("ls")),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_words("-v ls"), Err(OptionError::NoCommandAllowed("-v")));
        assert_eq!(parse_words("-K ls"), Err(OptionError::NoCommandAllowed("-K")));
        assert_eq!(parse_words(""), Err(OptionError::NoCommand));
        assert_eq!(parse_words("-n"), Err(OptionError::NoCommand));
    }

    #[test]
    fn unsupported_options_are_named() {
        for (line, named) in [
            ("-e /etc/hosts", "-e"),
            ("-nb sleep 1", "-b"),
            ("-g root id", "-g"),
            ("-h host id", "-h"),
            ("--chdir=/ id", "--chdir"),
            ("--bogus id", "--bogus"),
            ("-D / id", "-D"),
        ] {
            let err = parse_words(line).unwrap_err();
            assert_eq!(err, OptionError::Unsupported(named.into()), "{line}");
            assert!(err.to_string().contains(&format!("'{named}'")), "{err}");
        }
        assert_eq!(parse_words("-u"), Err(OptionError::MissingValue("-u".into())));
        assert_eq!(parse_words("--user"), Err(OptionError::MissingValue("--user".into())));
    }
}
