//! Logging of a running agent: `log.dir` with size-based rotation, `log.type: json` lines, and
//! a `log` section changed by `POST /reload` applied without a restart.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use harness::{to_yaml, Cluster, Options, SHORT_TIMEOUT};
use serde_json::{json, Value};

/// Every JSON line of `patroni.log` and its rotated copies, oldest file first.
fn lines(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for name in ["patroni.log.2", "patroni.log.1", "patroni.log"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            out.push(v);
        }
    }
    out
}

/// An agent with `log.dir`, `file_size: 1000`, `file_num: 2` and `type: json` writes only
/// JSON lines with the configured fields into `patroni.log`, rotates it into `.1` and `.2`
/// and never keeps a `.3`. `POST /reload` of a file with `level: WARNING` and new
/// `static_fields` takes effect at once: the reload's own warning is written with the new
/// field and no INFO line follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_file_rotates_and_follows_reload() {
    harness::init();
    let doc: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let log_dir: Arc<Mutex<Option<PathBuf>>> = Arc::new(Mutex::new(None));
    let (doc_in, dir_in) = (doc.clone(), log_dir.clone());
    let options = Options {
        customize: Some(Arc::new(move |_, d: &mut Value| {
            let member_dir = Path::new(d["postgresql"]["data_dir"].as_str().unwrap())
                .parent()
                .unwrap()
                .to_path_buf();
            let dir = member_dir.join("log");
            d["log"] = json!({
                "level": "INFO",
                "type": "json",
                "format": ["asctime", {"levelname": "level"}, "message"],
                "static_fields": {"phase": "before"},
                "dir": dir.to_str().unwrap(),
                "file_size": 1000,
                "file_num": 2,
            });
            *dir_in.lock().unwrap() = Some(dir);
            *doc_in.lock().unwrap() = Some(d.clone());
        })),
        ..Options::default()
    };
    let cluster = Cluster::start(1, options);
    assert_eq!(cluster.wait_for_leader().await, 0);
    let dir = log_dir.lock().unwrap().clone().unwrap();

    cluster
        .wait(SHORT_TIMEOUT, "patroni.log.2", async || {
            ensure!(dir.join("patroni.log.2").exists(), "not rotated twice yet");
            Ok(())
        })
        .await;
    // One more rotation at least, to see that file_num caps the copies.
    let first = std::fs::read_to_string(dir.join("patroni.log.2")).unwrap();
    cluster
        .wait(SHORT_TIMEOUT, "another rotation", async || {
            let now = std::fs::read_to_string(dir.join("patroni.log.2")).unwrap_or_default();
            ensure!(now != first, "patroni.log.2 unchanged");
            Ok(())
        })
        .await;
    assert!(!dir.join("patroni.log.3").exists());
    for name in ["patroni.log.2", "patroni.log.1"] {
        let len = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(len < 1000, "{name}: {len} bytes");
    }
    let before = lines(&dir);
    assert!(
        before.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("the leader with the lock"))),
        "{before:?}"
    );
    for l in &before {
        let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["asctime", "level", "message", "phase"], "{l}");
    }

    let mut d = doc.lock().unwrap().clone().unwrap();
    d["log"]["level"] = json!("WARNING");
    d["log"]["static_fields"] = json!({"phase": "after"});
    // Not implemented: the reload warns about it, in the new format.
    d["log"]["loggers"] = json!({"patroni.ha": "DEBUG"});
    std::fs::write(&cluster.member(0).config_path, to_yaml(&d)).unwrap();
    let (code, _) = cluster
        .api_call(0, "POST", "/reload", None, true)
        .await
        .unwrap();
    assert_eq!(code, 202);
    cluster
        .wait(SHORT_TIMEOUT, "the reload's warning", async || {
            let after = lines(&dir);
            ensure!(
                after.iter().any(|l| l["phase"] == "after"
                    && l["level"] == "WARNING"
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("log.loggers"))),
                "no warning with phase=after yet"
            );
            Ok(())
        })
        .await;
    // Several cycles (loop_wait 1) that would each have logged an INFO line.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = lines(&dir);
    let info_after: Vec<&Value> = after
        .iter()
        .filter(|l| l["phase"] == "after" && l["level"] == "INFO")
        .collect();
    assert!(info_after.is_empty(), "{info_after:?}");
    assert!(cluster.agent_running(0));
}
