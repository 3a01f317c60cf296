use std::path::Path;
use std::time::Duration;

use super::*;

fn settings(callbacks: &[(&str, String)]) -> HookSettings {
    HookSettings {
        callbacks: callbacks
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..HookSettings::default()
    }
}

/// A callback command appending its last three arguments to `file`, after `sleep` seconds.
fn appender(file: &Path, sleep: u32) -> String {
    format!(
        "sh -c 'sleep {sleep}; echo \"$@\" >> {}' callback",
        file.display()
    )
}

async fn wait_idle(hooks: &Hooks) {
    for _ in 0..200 {
        if !hooks.busy() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("callbacks still running");
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn callback_arguments_follow_the_command_split_like_shlex() {
    assert_eq!(
        callback_argv(
            "/usr/bin/cb --opt 'a b' \"c d\"",
            CallbackAction::OnRoleChange,
            Role::Primary,
            "batman"
        )
        .unwrap(),
        [
            "/usr/bin/cb",
            "--opt",
            "a b",
            "c d",
            "on_role_change",
            "primary",
            "batman"
        ]
    );
    assert_eq!(
        callback_argv("cb", CallbackAction::OnStop, Role::Demoted, "s").unwrap(),
        ["cb", "on_stop", "demoted", "s"]
    );
    assert_eq!(
        callback_argv("cb", CallbackAction::OnStart, Role::StandbyLeader, "s").unwrap()[2],
        "standby_leader"
    );
    assert_eq!(
        callback_argv("cb 'unclosed", CallbackAction::OnStart, Role::Replica, "s"),
        None
    );
    assert_eq!(
        callback_argv("  ", CallbackAction::OnStart, Role::Replica, "s"),
        None
    );
    assert_eq!(
        hook_argv("/bin/fence --now").unwrap(),
        ["/bin/fence", "--now"]
    );
    assert_eq!(hook_argv(""), None);
}

#[test]
fn local_hooks_take_precedence_over_dynamic_ones() {
    let doc = "name: a\nscope: s\netcd3: {host: '127.0.0.1:2379'}\nrestapi: {listen: '127.0.0.1:8008', connect_address: '127.0.0.1:8008'}\npostgresql: {listen: '127.0.0.1:5432', connect_address: '127.0.0.1:5432', data_dir: /tmp/x, authentication: {superuser: {username: p}, replication: {username: r}}}\n";
    let env = vec![("PATRONI_CONFIGURATION".to_string(), doc.to_string())];
    let mut local = pgpilot_config::load(None, &env).unwrap().config.postgresql;
    local.callbacks.clear();
    local.pre_promote = None;
    local.before_stop = Some("/bin/local-drain".into());
    let (dynamic, _) = DynamicConfig::from_document(
        serde_json::json!({"postgresql": {
            "callbacks": {"on_start": "/bin/dyn"},
            "pre_promote": "/bin/dyn-fence",
            "before_stop": "/bin/dyn-drain",
        }})
        .as_object()
        .unwrap(),
    );
    let s = HookSettings::effective(&local, &dynamic);
    assert_eq!(s.callbacks.get("on_start").unwrap(), "/bin/dyn");
    assert_eq!(s.pre_promote.as_deref(), Some("/bin/dyn-fence"));
    assert_eq!(s.before_stop.as_deref(), Some("/bin/local-drain"));
    local
        .callbacks
        .insert("on_stop".into(), "/bin/local".into());
    let s = HookSettings::effective(&local, &dynamic);
    assert_eq!(s.callbacks.len(), 1);
    assert_eq!(s.callbacks.get("on_stop").unwrap(), "/bin/local");
}

/// A fired callback gets `<action> <role> <scope>`; an action without a command still counts
/// as "called" (except `on_reload`), as Patroni's `cb_called`.
#[tokio::test]
async fn fired_callbacks_run_with_action_role_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cb.log");
    let hooks = Hooks::new(
        "batman",
        settings(&[
            ("on_start", appender(&out, 0)),
            ("on_reload", appender(&out, 0)),
        ]),
    );
    hooks.fire(CallbackAction::OnReload, Role::Replica);
    wait_idle(&hooks).await;
    assert!(!hooks.called());
    hooks.fire(CallbackAction::OnStart, Role::Replica);
    wait_idle(&hooks).await;
    assert!(hooks.called());
    hooks.fire(CallbackAction::OnStop, Role::Replica);
    assert!(!hooks.busy());
    assert_eq!(
        lines(&out),
        ["on_reload replica batman", "on_start replica batman"]
    );
}

/// A callback still running when the next fires is killed with the children it started; an
/// `on_reload` does not kill another callback.
#[tokio::test]
async fn a_running_callback_is_killed_with_its_children_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cb.log");
    let child_pid = dir.path().join("child.pid");
    let slow = format!(
        "sh -c 'sleep 30 & echo $! > {}; wait; echo \"$@\" >> {}' slow",
        child_pid.display(),
        out.display()
    );
    let hooks = Hooks::new(
        "batman",
        settings(&[
            ("on_start", slow),
            ("on_reload", appender(&out, 0)),
            ("on_role_change", appender(&out, 0)),
        ]),
    );
    hooks.fire(CallbackAction::OnStart, Role::Replica);
    let mut pid = None;
    for _ in 0..200 {
        pid = std::fs::read_to_string(&child_pid)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        if pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pid = Pid::from_raw(pid.expect("the slow callback started its child"));
    hooks.fire(CallbackAction::OnReload, Role::Replica);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        nix::sys::signal::kill(pid, None).is_ok(),
        "on_reload killed it"
    );
    hooks.fire(CallbackAction::OnRoleChange, Role::Primary);
    wait_idle(&hooks).await;
    let mut gone = false;
    for _ in 0..100 {
        // The grandchild is reparented and reaped by init (or the test's subreaper).
        if nix::sys::signal::kill(pid, None).is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "the killed callback's child still runs");
    assert_eq!(
        lines(&out),
        ["on_reload replica batman", "on_role_change primary batman"]
    );
}

/// `finish` lets a running callback end, and kills one that outlives the limit.
#[tokio::test]
async fn finish_waits_for_running_callbacks_then_kills_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cb.log");
    let hooks = Hooks::new("s", settings(&[("on_stop", appender(&out, 1))]));
    hooks.fire(CallbackAction::OnStop, Role::Primary);
    hooks.finish(Duration::from_secs(20)).await;
    assert_eq!(lines(&out), ["on_stop primary s"]);

    let hooks = Hooks::new("s", settings(&[("on_stop", appender(&out, 30))]));
    hooks.fire(CallbackAction::OnStop, Role::Replica);
    let started = std::time::Instant::now();
    hooks.finish(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!hooks.busy());
    assert_eq!(lines(&out).len(), 1);
}

/// `before_stop` is waited for, and killed at its limit; a missing program is only logged.
#[tokio::test]
async fn before_stop_is_waited_for_within_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stop.log");
    let hooks = Hooks::new(
        "s",
        HookSettings {
            before_stop: Some(format!("sh -c 'echo drained >> {}'", out.display())),
            ..HookSettings::default()
        },
    );
    hooks.before_stop(Duration::from_secs(20)).await;
    assert_eq!(lines(&out), ["drained"]);

    hooks.configure(HookSettings {
        before_stop: Some("sleep 30".into()),
        ..HookSettings::default()
    });
    let started = std::time::Instant::now();
    hooks.before_stop(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(10));

    hooks.configure(HookSettings {
        before_stop: Some("/nonexistent/before-stop".into()),
        ..HookSettings::default()
    });
    hooks.before_stop(Duration::from_secs(1)).await;
}

#[test]
fn python_list_rendering() {
    assert_eq!(
        py_list(&["/bin/cb".into(), "it's".into()]),
        "['/bin/cb', 'it\\'s']"
    );
}
