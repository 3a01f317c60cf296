//! A watchdog for agents configured with `watchdog.driver: testing`: a named pipe read by a
//! thread that records Patroni's harness protocol (`Ctimeout=<n>\n`, `1` per keepalive, `V` on
//! a magic close), as Patroni's acceptance suite (`features/environment.py`'s
//! `WatchdogMonitor`) does. It only records; it never resets anything.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One thing the agent did to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogEvent {
    /// `Ctimeout=<n>\n`.
    Timeout(u64),
    /// `1`.
    Keepalive,
    /// `V`: the magic close, the watchdog stops.
    MagicClose,
    /// The agent closed the pipe (after `V`, or without it: then the watchdog would fire).
    Closed,
    /// Bytes the protocol does not have.
    Unknown(u8),
}

/// The pipe and its reader thread; stopped in `Drop`.
pub struct WatchdogMonitor {
    path: PathBuf,
    events: Arc<Mutex<Vec<WatchdogEvent>>>,
    thread: Option<JoinHandle<()>>,
}

impl WatchdogMonitor {
    /// Creates the pipe at `path` (replacing a leftover one) and starts reading it.
    pub fn start(path: &Path) -> WatchdogMonitor {
        let _ = std::fs::remove_file(path);
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (reader_path, recorded) = (path.to_path_buf(), events.clone());
        let thread = std::thread::Builder::new()
            .name("watchdog-monitor".into())
            .spawn(move || read_pipe(&reader_path, &recorded))
            .expect("start the watchdog monitor thread");
        WatchdogMonitor {
            path: path.to_path_buf(),
            events,
            thread: Some(thread),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<WatchdogEvent> {
        self.events.lock().unwrap().clone()
    }

    /// How many events were recorded: a mark to look at what came after it.
    pub fn mark(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// The events recorded after `mark`.
    pub fn since(&self, mark: usize) -> Vec<WatchdogEvent> {
        self.events.lock().unwrap()[mark..].to_vec()
    }
}

/// Reads the pipe until told to stop (`X`, written by `Drop`), opening it again after each
/// writer went away.
fn read_pipe(path: &Path, events: &Mutex<Vec<WatchdogEvent>>) {
    let record = |e: WatchdogEvent| events.lock().unwrap().push(e);
    loop {
        // Blocks until a writer opens the pipe.
        let Ok(file) = OpenOptions::new().read(true).open(path) else {
            return;
        };
        let mut pipe = BufReader::new(file);
        let mut byte = [0u8; 1];
        loop {
            match pipe.read(&mut byte) {
                Ok(0) | Err(_) => {
                    record(WatchdogEvent::Closed);
                    break;
                }
                Ok(_) => {}
            }
            match byte[0] {
                b'X' => return,
                b'1' => record(WatchdogEvent::Keepalive),
                b'V' => record(WatchdogEvent::MagicClose),
                b'C' => {
                    let mut command = String::new();
                    let _ = pipe.read_line(&mut command);
                    match command.trim_end().strip_prefix("timeout=") {
                        Some(n) => record(WatchdogEvent::Timeout(n.parse().unwrap_or(0))),
                        None => record(WatchdogEvent::Unknown(b'C')),
                    }
                }
                other => record(WatchdogEvent::Unknown(other)),
            }
        }
    }
}

impl Drop for WatchdogMonitor {
    fn drop(&mut self) {
        // The reader is blocked in open or read: a writer's `X` reaches it either way. Between
        // two writers it may not have the pipe open for a moment: try again briefly, and leave
        // the thread behind rather than hang the test.
        for _ in 0..100 {
            let sent = OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&self.path)
                .and_then(|mut w| w.write_all(b"X"));
            if sent.is_ok() {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                break;
            }
            if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
