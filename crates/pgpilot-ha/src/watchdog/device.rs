//! The real watchdog devices behind [`SystemWatchdogs`]:
//!
//! * `driver: default`: a Linux watchdog device (`/dev/watchdog`) through its ioctls
//!   (`WDIOC_GETSUPPORT`, `WDIOC_SETTIMEOUT`, `WDIOC_GETTIMEOUT`). A keepalive is a write, as
//!   in Patroni: every driver takes one, while `WDIOC_KEEPALIVE` needs `WDIOF_KEEPALIVEPING`.
//! * `driver: testing`: Patroni's harness protocol for its acceptance suite, written to a named
//!   pipe: `Ctimeout=<n>\n` sets the timeout, `1` is a keepalive, `V` the magic close. The
//!   pipe is opened without blocking (no reader: the open fails, the cycle never waits on it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::libc;
use pgpilot_config::{WatchdogConfig, WatchdogDriver};

use super::{WatchdogDevice, WatchdogError, WatchdogOpener};

/// `struct watchdog_info` of `linux/watchdog.h`.
#[repr(C)]
#[derive(Debug, Default)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

const WDIOF_SETTIMEOUT: u32 = 0x0080;
const WDIOF_MAGICCLOSE: u32 = 0x0100;
const DEFAULT_DEVICE: &str = "/dev/watchdog";

nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

/// Opens the devices of `watchdog.driver`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemWatchdogs;

impl WatchdogOpener for SystemWatchdogs {
    fn open(&self, config: &WatchdogConfig) -> Result<Box<dyn WatchdogDevice>, WatchdogError> {
        Ok(match config.driver {
            WatchdogDriver::Linux => Box::new(LinuxDevice::open(&config.device)?),
            WatchdogDriver::Testing => Box::new(TestingDevice::open(&config.device)?),
        })
    }

    fn usable(&self, config: &WatchdogConfig) -> bool {
        config.device.exists()
            && nix::unistd::access(&config.device, nix::unistd::AccessFlags::W_OK).is_ok()
    }

    fn describe(&self, config: &WatchdogConfig) -> String {
        let name = match config.driver {
            WatchdogDriver::Linux => "Linux watchdog device",
            WatchdogDriver::Testing => TestingDevice::IDENTITY,
        };
        format!("{name}{}", at(&config.device))
    }
}

/// ` at <device>` unless it is the default device.
fn at(device: &Path) -> String {
    if device == Path::new(DEFAULT_DEVICE) {
        String::new()
    } else {
        format!(" at {}", device.display())
    }
}

fn write_all(file: &mut File, bytes: &[u8], what: &'static str) -> Result<(), WatchdogError> {
    file.write_all(bytes)
        .map_err(|source| WatchdogError::Io { what, source })
}

fn magic_close(mut file: File) -> Result<(), WatchdogError> {
    let r = file.write_all(b"V");
    // Closed either way; without the `V` the driver keeps counting.
    drop(file);
    r.map_err(|source| WatchdogError::Io {
        what: "Error while closing the watchdog device",
        source,
    })
}

/// A Linux watchdog device.
struct LinuxDevice {
    file: File,
    path: PathBuf,
    info: WatchdogInfo,
}

impl LinuxDevice {
    fn open(path: &Path) -> Result<LinuxDevice, WatchdogError> {
        // Write-only, close-on-exec (std's default): PostgreSQL and pg_ctl must not inherit it.
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(WatchdogError::Open)?;
        let mut info = WatchdogInfo::default();
        // SAFETY: the descriptor is open for the call and `info` is a `struct watchdog_info`.
        let support = unsafe { wdioc_getsupport(file.as_raw_fd(), &mut info) };
        if let Err(e) = support {
            // Not a watchdog (or a broken one): stop it in case it was one, and say why.
            let _ = magic_close(file);
            return Err(WatchdogError::Io {
                what: "Could not get information about watchdog device",
                source: e.into(),
            });
        }
        Ok(LinuxDevice {
            file,
            path: path.to_path_buf(),
            info,
        })
    }
}

impl WatchdogDevice for LinuxDevice {
    fn describe(&self) -> String {
        let end = self
            .info
            .identity
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.info.identity.len());
        let identity = String::from_utf8_lossy(&self.info.identity[..end]);
        let identity = if identity.is_empty() {
            "Linux watchdog device".into()
        } else {
            identity
        };
        let firmware = match self.info.firmware_version {
            0 => String::new(),
            v => format!(" (firmware {v})"),
        };
        format!("{identity}{firmware}{}", at(&self.path))
    }

    fn can_set_timeout(&self) -> bool {
        self.info.options & WDIOF_SETTIMEOUT != 0
    }

    fn can_be_disabled(&self) -> bool {
        self.info.options & WDIOF_MAGICCLOSE != 0
    }

    fn set_timeout(&mut self, seconds: i64) -> Result<(), WatchdogError> {
        let mut value =
            libc::c_int::try_from(seconds).map_err(|_| WatchdogError::InvalidTimeout(seconds))?;
        // SAFETY: the descriptor is open and `value` is the `int` the ioctl reads and writes.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut value) }
            .map(drop)
            .map_err(|e| WatchdogError::Io {
                what: "Could not set timeout on watchdog device",
                source: e.into(),
            })
    }

    fn timeout(&mut self) -> Result<i64, WatchdogError> {
        let mut value: libc::c_int = 0;
        // SAFETY: the descriptor is open and `value` is the `int` the ioctl writes.
        unsafe { wdioc_gettimeout(self.file.as_raw_fd(), &mut value) }
            .map(|_| i64::from(value))
            .map_err(|e| WatchdogError::Io {
                what: "Could not get timeout on watchdog device",
                source: e.into(),
            })
    }

    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        write_all(&mut self.file, b"1", "Could not send watchdog keepalive")
    }

    fn close(self: Box<Self>) -> Result<(), WatchdogError> {
        magic_close(self.file)
    }
}

/// Patroni's `TestingWatchdogDevice`: the timeout travels in-band over a named pipe.
struct TestingDevice {
    file: File,
    path: PathBuf,
    /// What the harness was last told (60 before anything, as in Patroni).
    timeout: i64,
}

impl TestingDevice {
    const IDENTITY: &'static str = "Watchdog test harness";

    fn open(path: &Path) -> Result<TestingDevice, WatchdogError> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(WatchdogError::Open)?;
        Ok(TestingDevice {
            file,
            path: path.to_path_buf(),
            timeout: 60,
        })
    }
}

impl WatchdogDevice for TestingDevice {
    fn describe(&self) -> String {
        format!("{}{}", Self::IDENTITY, at(&self.path))
    }

    fn can_set_timeout(&self) -> bool {
        true
    }

    fn can_be_disabled(&self) -> bool {
        true
    }

    fn set_timeout(&mut self, seconds: i64) -> Result<(), WatchdogError> {
        let command = format!("Ctimeout={seconds}\n");
        write_all(
            &mut self.file,
            command.as_bytes(),
            "Could not set timeout on watchdog device",
        )?;
        self.timeout = seconds;
        Ok(())
    }

    fn timeout(&mut self) -> Result<i64, WatchdogError> {
        Ok(self.timeout)
    }

    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        write_all(&mut self.file, b"1", "Could not send watchdog keepalive")
    }

    fn close(self: Box<Self>) -> Result<(), WatchdogError> {
        magic_close(self.file)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::{Duration, Instant};

    use super::*;

    /// A named pipe in a fresh directory and a reader thread that returns every byte written to
    /// it until the writer closes it.
    fn fifo() -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut f = OpenOptions::new().read(true).open(&reader_path).unwrap();
            f.read_to_end(&mut bytes).unwrap();
            bytes
        });
        (dir, path, reader)
    }

    fn testing(device: &Path) -> WatchdogConfig {
        WatchdogConfig {
            driver: WatchdogDriver::Testing,
            device: device.to_path_buf(),
            ..Default::default()
        }
    }

    /// Opens the pipe once the reader thread has it open (a non-blocking writer needs one).
    fn open_when_read(config: &WatchdogConfig) -> Box<dyn WatchdogDevice> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match SystemWatchdogs.open(config) {
                Ok(d) => return d,
                Err(e) if Instant::now() > deadline => panic!("no reader came: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The testing driver writes Patroni's harness protocol, byte for byte, to a real FIFO.
    #[test]
    fn testing_driver_speaks_patronis_fifo_protocol() {
        let (_dir, path, reader) = fifo();
        let config = testing(&path);
        assert!(SystemWatchdogs.usable(&config));
        let mut d = open_when_read(&config);
        assert_eq!(
            d.describe(),
            format!("Watchdog test harness at {}", path.display())
        );
        assert_eq!(d.timeout().unwrap(), 60, "Patroni's harness starts at 60");
        d.set_timeout(15).unwrap();
        assert_eq!(d.timeout().unwrap(), 15);
        d.keepalive().unwrap();
        d.keepalive().unwrap();
        d.close().unwrap();
        assert_eq!(
            String::from_utf8(reader.join().unwrap()).unwrap(),
            "Ctimeout=15\n11V"
        );
    }

    /// Without a reader the pipe does not open: the cycle is never blocked by it.
    #[test]
    fn testing_driver_without_a_reader_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let started = Instant::now();
        let e = SystemWatchdogs.open(&testing(&path)).err().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            e.to_string().starts_with("Can't open watchdog device: "),
            "{e}"
        );
    }

    /// A device that does not exist is not usable and does not open; a file that is no watchdog
    /// is refused by `WDIOC_GETSUPPORT`.
    #[test]
    fn linux_driver_refuses_what_is_not_a_watchdog() {
        let dir = tempfile::tempdir().unwrap();
        let missing = WatchdogConfig {
            device: dir.path().join("nothing"),
            ..Default::default()
        };
        assert!(!SystemWatchdogs.usable(&missing));
        assert!(SystemWatchdogs.open(&missing).is_err());
        assert_eq!(
            SystemWatchdogs.describe(&missing),
            format!("Linux watchdog device at {}", missing.device.display())
        );
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let plain = WatchdogConfig {
            device: file,
            ..Default::default()
        };
        let e = SystemWatchdogs.open(&plain).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("Could not get information about watchdog device: "),
            "{e}"
        );
    }
}
