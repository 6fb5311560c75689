//! Child processes of the real tier: logs to a file each, killed on drop, and never
//! outliving the test process (a watchdog shell ends them when their parent dies, so a
//! test killed by the runner leaves no etcd or apiserver behind).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::Error;

/// A running component.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("log", &self.log)
            .finish()
    }
}

/// `sh` runs the component in the background and polls the test process every
/// 0.5 s; when it is gone the component gets SIGTERM, then SIGKILL. SIGTERM to the
/// watchdog is passed on, then SIGKILL 5 s later (an apiserver whose etcd went first
/// never finished its graceful shutdown and outlived its test by hours); SIGUSR1 kills
/// the component at once ([`Proc::kill_now`]).
const WATCHDOG: &str = r#"parent=$1; shift
"$@" &
child=$!
trap 'kill -TERM $child 2>/dev/null; (sleep 5; kill -KILL $child 2>/dev/null) & wait $child; exit' TERM INT
trap 'kill -KILL $child 2>/dev/null; wait $child; exit' USR1
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
if kill -0 "$child" 2>/dev/null; then kill -TERM "$child"; sleep 2; kill -KILL "$child" 2>/dev/null; fi
wait "$child""#;

impl Proc {
    /// Starts `bin args…` with its output in `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log_dir: &Path,
    ) -> Result<Self, Error> {
        if !bin.is_file() {
            return Err(Error::MissingBinary(bin.to_path_buf()));
        }
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(&log, e))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| Error::io(bin, e))?;
        tracing::debug!(component = name, log = %log.display(), "started");
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of its output (for error messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM through the watchdog (which forwards it), then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// SIGKILL through the watchdog, for a component whose data is thrown away: a
    /// graceful stop of etcd and the apiserver together waits seconds on each other.
    pub async fn kill_now(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg("-USR1")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the watchdog traps it and takes the component down with
        // it, where a killed watchdog would orphan the component.
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released: good enough for one test's
/// components, which claim it at once).
pub(crate) fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1:0", e))?;
    let port = l
        .local_addr()
        .map_err(|e| Error::io("127.0.0.1:0", e))?
        .port();
    Ok(port)
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// The last `n` lines of each component's log, headed by its name and log path.
pub(crate) fn logs_of(procs: &[Proc], n: usize) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "--- {} ({})\n{}",
                p.name(),
                p.log_path().display(),
                p.log_tail(n)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kills every component at once and waits for all of them: their data is thrown away
/// with the test, and a graceful stop one after the other took about 5 s per test.
pub(crate) async fn stop_all(procs: &mut Vec<Proc>) {
    let mut stopping = tokio::task::JoinSet::new();
    for mut p in procs.drain(..) {
        stopping.spawn(async move { p.kill_now().await });
    }
    while stopping.join_next().await.is_some() {}
}
