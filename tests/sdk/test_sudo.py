"""sudo inside a sandbox, as E2B users and scripts use it: passwordless for `user`, through the
agent (gVisor ignores set-user-ID bits, so the setuid sudo can never become root). Every
SDK-created sandbox is restored from a template checkpoint, so each test here also shows that the
agent's sudo socket survives a restore; one test pauses and resumes on top."""

import time

import pytest
from e2b import CommandExitException, Sandbox, TimeoutException


def run(sbx, cmd, **kwargs):
    return sbx.commands.run(cmd, **kwargs).stdout


def test_sudo_runs_as_root_without_a_password(sandbox):
    assert run(sandbox, "whoami") == "user\n"
    assert run(sandbox, "sudo whoami") == "root\n"
    assert run(sandbox, "sudo -n id -u") == "0\n"
    assert run(sandbox, "command -v sudo") == "/usr/bin/sudo\n"
    assert run(sandbox, "/usr/bin/sudo id -u") == "0\n", "by absolute path too"
    assert run(sandbox, "sudo -u user id -u") == "1000\n"
    assert run(sandbox, "sudo -u user -- id -un") == "user\n"
    # root's groups, not the caller's
    assert run(sandbox, "sudo id -G") == "0\n"


def test_root_only_things_work(sandbox):
    run(sandbox, "sudo mkdir /opt/x && sudo chown user /opt/x && touch /opt/x/mine")
    assert run(sandbox, "stat -c %U /opt/x /opt/x/mine") == "user\nuser\n"
    assert "apt" in run(sandbox, "sudo apt-get --version")
    assert run(sandbox, "sudo cat /etc/sudoers.d/user").startswith("user ALL=")


def test_exit_status_and_signals_propagate(sandbox):
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("sudo sh -c 'echo out; echo err >&2; exit 3'")
    assert e.value.exit_code == 3
    assert e.value.stdout == "out\n"
    assert e.value.stderr == "err\n"
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("sudo sh -c 'kill -TERM $$'")
    assert e.value.exit_code == 128 + 15
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("sudo no-such-command-here")
    assert e.value.exit_code == 1
    assert e.value.stderr == "sudo: no-such-command-here: command not found\n"


def test_stdin_and_stdout_go_through(sandbox):
    assert run(sandbox, "echo hi | sudo tee /root/hi.txt") == "hi\n"
    assert run(sandbox, "cat /root/hi.txt", user="root") == "hi\n"
    assert run(sandbox, "stat -c %U /root/hi.txt", user="root") == "root\n"
    with pytest.raises(CommandExitException):
        sandbox.commands.run("cat /root/hi.txt")  # user still cannot read it
    # output through a pipe ends when the command ends (the agent keeps no copy of it)
    assert run(sandbox, "sudo seq 3 | wc -l") == "3\n"


def test_environment_is_reset_unless_preserved(sandbox):
    envs = {"MYVAR": "kept"}
    assert run(sandbox, "sudo sh -c 'echo ${MYVAR:-unset}'", envs=envs) == "unset\n"
    assert run(sandbox, "sudo -E sh -c 'echo ${MYVAR:-unset}'", envs=envs) == "kept\n"
    assert run(sandbox, "sudo -nE sh -c 'echo ${MYVAR:-unset}'", envs=envs) == "kept\n"
    assert run(sandbox, "sudo --preserve-env=MYVAR sh -c 'echo ${MYVAR:-unset}'", envs=envs) == "kept\n"
    out = run(sandbox, "sudo sh -c 'echo $HOME $USER $LOGNAME $SUDO_USER $SUDO_UID $SUDO_GID $PATH'")
    assert out == "/root root root user 1000 1000 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    assert run(sandbox, "sudo -E sh -c 'echo $HOME $USER'") == "/home/user root\n"
    assert run(sandbox, "sudo -EH sh -c 'echo $HOME'") == "/root\n"
    assert run(sandbox, "sudo DEBIAN_FRONTEND=noninteractive sh -c 'echo $DEBIAN_FRONTEND'") == "noninteractive\n"
    assert run(sandbox, "sudo printenv SUDO_COMMAND") == "/usr/bin/printenv SUDO_COMMAND\n"


def test_working_directory_login_and_shell(sandbox):
    assert run(sandbox, "cd /tmp && sudo pwd") == "/tmp\n"
    assert run(sandbox, "sudo pwd", cwd="/etc") == "/etc\n"
    assert run(sandbox, "cd /tmp && sudo -i pwd") == "/root\n"
    assert run(sandbox, "sudo -u user -i pwd") == "/home/user\n"
    assert run(sandbox, "sudo -i sh -c 'echo $HOME'") == "/root\n"
    assert run(sandbox, "sudo -s id -u") == "0\n"


def test_informational_options(sandbox):
    assert "NOPASSWD: ALL" in run(sandbox, "sudo -l")
    assert run(sandbox, "sudo -l whoami") == "/usr/bin/whoami\n"
    assert run(sandbox, "sudo -v && sudo -k && sudo -K && echo ok") == "ok\n"
    assert run(sandbox, "sudo -k whoami") == "root\n"
    assert "usage: sudo" in run(sandbox, "sudo -h")


def test_unsupported_options_fail_naming_the_option(sandbox):
    for cmd, named in [("sudo --frobnicate whoami", "--frobnicate"), ("sudo -e /etc/hosts", "-e"),
                       ("sudo -nb sleep 1", "-b")]:
        with pytest.raises(CommandExitException) as e:
            sandbox.commands.run(cmd)
        assert e.value.exit_code == 1, cmd
        assert f"option '{named}' is not supported" in e.value.stderr, (cmd, e.value.stderr)
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("sudo")
    assert e.value.exit_code == 1 and "usage: sudo" in e.value.stderr


def test_other_users_are_refused(sandbox):
    run(sandbox, "useradd --no-create-home other", user="root")
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("sudo -u other sudo whoami")
    assert e.value.exit_code == 1
    assert "other is not allowed to run sudo" in e.value.stderr
    run(sandbox, "usermod -aG sudo other", user="root")
    assert run(sandbox, "sudo -u other sudo whoami") == "root\n", "members of group sudo may"


def test_killing_sudo_kills_its_command(sandbox):
    h = sandbox.commands.run("sudo sleep 1000", background=True)
    deadline = time.time() + 10
    while run(sandbox, "pgrep -u root -x sleep || true") == "" and time.time() < deadline:
        time.sleep(0.1)
    assert run(sandbox, "pgrep -u root -x sleep || true") != ""
    assert sandbox.commands.kill(h.pid) is True
    deadline = time.time() + 10
    while run(sandbox, "pgrep -u root -x sleep || true") != "" and time.time() < deadline:
        time.sleep(0.1)
    assert run(sandbox, "pgrep -u root -x sleep || true") == "", "the root command died with its sudo"
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sudo sleep 999", timeout=2)
    time.sleep(0.5)
    assert run(sandbox, "pgrep -u root -x sleep || true") == ""


def test_sudo_works_across_pause_and_resume(sandbox):
    # One sudo in flight across the checkpoint, one started after the restore.
    h = sandbox.commands.run("sudo sh -c 'while [ ! -e /tmp/go ]; do sleep 0.1; done; id -u; exit 5'",
                             background=True)
    assert sandbox.pause() is True
    resumed = Sandbox.connect(sandbox.sandbox_id)
    assert run(resumed, "sudo whoami") == "root\n"
    assert run(resumed, "echo again | sudo tee /root/again.txt") == "again\n"
    attached = resumed.commands.connect(h.pid)
    run(resumed, "touch /tmp/go")
    with pytest.raises(CommandExitException) as e:
        attached.wait()
    assert e.value.exit_code == 5
    assert e.value.stdout == "0\n"
