//! Test fixture: govmomi's vCenter simulator (`tools/vcsim`) on its own loopback address,
//! port 443, with TLS verified against the CA it writes, so server names are plain hosts
//! like real vCenters.
//!
//! ```no_run
//! use vcfm_vsphere::sim::{Vcsim, VcsimOptions};
//! let vc = Vcsim::start(VcsimOptions::default()).expect("run tools/vcsim/build.sh");
//! let client = vc.client().unwrap(); // TLS verified against vc.ca_pem_path()
//! # let _ = client;
//! ```
//!
//! The binary is `$VCFM_VCSIM_BIN` or `<workspace>/target/vcsim/vcsim`; build it with
//! `tools/vcsim/build.sh` (govmomi's simulator at the version `tools/vcsim/go.mod` names).
//! Instances are killed and reaped on drop (also during a panic), and exit by themselves
//! when the test process dies (they watch their stdin).

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::{Client, ClientConfig, Credentials, TlsOptions};

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The binary has not been built.
    #[error("vcsim binary not found at {0}: run tools/vcsim/build.sh (or set VCFM_VCSIM_BIN)")]
    BinaryMissing(PathBuf),
    /// Spawning or talking to the process failed.
    #[error("vcsim: {0}")]
    Io(#[from] std::io::Error),
    /// The process exited or stalled before it was ready.
    #[error("vcsim did not start on {addr}: {reason}\n{stderr}")]
    Startup {
        addr: Ipv4Addr,
        reason: String,
        stderr: String,
    },
    /// Every address tried was busy.
    #[error("vcsim: no free loopback address after {0} tries")]
    NoAddress(u32),
}

/// Simulator settings. `Default` gives one datacenter with one 3-host cluster, vCenter
/// 8.0.2, TLS on, user `administrator@vsphere.local`.
#[derive(Debug, Clone)]
pub struct VcsimOptions {
    /// Administrator user name.
    pub username: String,
    /// Administrator password.
    pub password: String,
    /// Optional second user whose role lacks `limited_missing`.
    pub limited_user: Option<Credentials>,
    /// Privileges the limited user's role lacks.
    pub limited_missing: Vec<String>,
    /// Datacenters.
    pub datacenters: u32,
    /// Clusters per datacenter.
    pub clusters: u32,
    /// Hosts per cluster.
    pub hosts: u32,
    /// VMs per resource pool / standalone host.
    pub vms: u32,
    /// `about.version`.
    pub about_version: String,
    /// `about.apiVersion`.
    pub api_version: String,
    /// Name of the template VM created in each datacenter's vm folder.
    pub template_name: String,
    /// Virtual hardware version of the inventory's VMs and so of their clones
    /// (`vmx-19` when unset).
    pub hardware_version: Option<String>,
    /// Hardware version of the templates (that of the VMs when unset); e.g. `vmx-13` for a
    /// template the OpenShift machine controller refuses (it needs 15 or later).
    pub template_hardware_version: Option<String>,
    /// Also create a VM named like the template in this folder (below each datacenter's
    /// vm folder, e.g. `other/place`), so that the template name matches two VMs.
    pub duplicate_template_folder: Option<String>,
    /// Expire idle sessions after this long (exercise re-login on expiry).
    pub session_idle_timeout: Option<Duration>,
    /// Simulator binary; default [`binary_path`].
    pub binary: Option<PathBuf>,
}

impl Default for VcsimOptions {
    fn default() -> Self {
        Self {
            username: "administrator@vsphere.local".into(),
            password: "vcsim-Passw0rd!".into(),
            limited_user: None,
            limited_missing: vec!["Folder.Create".into()],
            datacenters: 1,
            clusters: 1,
            hosts: 3,
            vms: 2,
            about_version: "8.0.2".into(),
            api_version: "8.0.2.0".into(),
            template_name: "rhcos-template".into(),
            hardware_version: None,
            template_hardware_version: None,
            duplicate_template_folder: None,
            session_idle_timeout: None,
            binary: None,
        }
    }
}

/// Inventory paths printed by the simulator at startup.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Inventory {
    /// `/DC0`, ...
    #[serde(default)]
    pub datacenters: Vec<String>,
    /// `/DC0/host/DC0_C0`, ...
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Hosts (cluster members and standalone).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `/DC0/datastore/LocalDS_0`, ...
    #[serde(default)]
    pub datastores: Vec<String>,
    /// `/DC0/network/VM Network`, portgroups, ...
    #[serde(default)]
    pub networks: Vec<String>,
    /// Root pools `/DC0/host/DC0_C0/Resources`, ...
    #[serde(default)]
    pub resource_pools: Vec<String>,
    /// VMs present at startup (templates excluded).
    #[serde(default)]
    pub vms: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Ready {
    server: String,
    ca_file: String,
    #[serde(default)]
    govmomi: String,
    #[serde(default)]
    hardware_version: String,
    #[serde(default)]
    template_hardware_version: String,
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    duplicates: Vec<String>,
    #[serde(default)]
    inventory: Inventory,
}

/// A running simulator instance.
pub struct Vcsim {
    opts: VcsimOptions,
    addr: Ipv4Addr,
    dir: PathBuf,
    ready: Ready,
    child: Option<(Child, ChildStdin)>,
    stderr: Arc<Mutex<String>>,
    /// Acknowledgements of armed fault bursts (`VCSIM_ARMED` lines): the
    /// helper reads its commands on its own goroutine, so a test waits for
    /// the acknowledgement before making the call it meant to fault.
    armed: Option<Mutex<mpsc::Receiver<String>>>,
}

impl std::fmt::Debug for Vcsim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcsim")
            .field("server", &self.ready.server)
            .field("dir", &self.dir)
            .finish()
    }
}

/// Path of the simulator binary.
pub fn binary_path() -> PathBuf {
    std::env::var_os("VCFM_VCSIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/vcsim/vcsim"))
}

/// The govmomi module version the simulator binary was built from (`v0.56.0`), as its
/// `-version` flag reports it.
pub fn govmomi_version(binary: &Path) -> Result<String, SimError> {
    if !binary.is_file() {
        return Err(SimError::BinaryMissing(binary.to_path_buf()));
    }
    let out = Command::new(binary).arg("-version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "github.com/vmware/govmomi")
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| {
            SimError::Io(std::io::Error::other(format!(
                "unexpected `vcsim -version` output: {text}"
            )))
        })
}

static NEXT: AtomicU32 = AtomicU32::new(0);
const MAX_TRIES: u32 = 40;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Next candidate address: `127.<16 + n>.<pid-derived>.<pid-derived>`. The pid part keeps
/// separate test processes apart (nextest), the counter separates instances in one process;
/// 127.0.0.x stays free for the demo. A busy address is skipped by the caller.
fn next_addr() -> Ipv4Addr {
    let pid = std::process::id();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let o1 = 16 + (n % 200) as u8;
    let o2 = 1 + ((pid / 254) % 254) as u8;
    let o3 = 1 + (pid % 254) as u8;
    Ipv4Addr::new(127, o1, o2, o3)
}

impl Vcsim {
    /// Starts one instance (blocks until it serves, typically well under a second).
    pub fn start(opts: VcsimOptions) -> Result<Self, SimError> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(remove_stale_dirs);
        let bin = opts.binary.clone().unwrap_or_else(binary_path);
        if !bin.is_file() {
            return Err(SimError::BinaryMissing(bin));
        }
        for _ in 0..MAX_TRIES {
            let addr = next_addr();
            let dir =
                std::env::temp_dir().join(format!("vcfm-vcsim-{}-{addr}", std::process::id()));
            let mut sim = Vcsim {
                opts: opts.clone(),
                addr,
                dir,
                ready: placeholder(),
                child: None,
                stderr: Arc::default(),
                armed: None,
            };
            match sim.spawn() {
                Ok(()) => return Ok(sim),
                Err(SimError::Startup { reason, .. }) if reason == "address in use" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SimError::NoAddress(MAX_TRIES))
    }

    /// Starts `n` instances in parallel (source and target vCenters, ...).
    pub fn start_many(n: usize, opts: &VcsimOptions) -> Result<Vec<Self>, SimError> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| s.spawn(|| Vcsim::start(opts.clone())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(SimError::NoAddress(0))))
                .collect()
        })
    }

    /// [`Vcsim::start`] without blocking an async runtime's worker.
    pub async fn start_async(opts: VcsimOptions) -> Result<Self, SimError> {
        tokio::task::spawn_blocking(move || Vcsim::start(opts))
            .await
            .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))?
    }

    fn spawn(&mut self) -> Result<(), SimError> {
        let tmp = self.dir.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let o = &self.opts;
        let mut cmd = Command::new(o.binary.clone().unwrap_or_else(binary_path));
        cmd.arg("-listen")
            .arg(format!("{}:443", self.addr))
            .args(["-username", &o.username, "-password", &o.password])
            .arg("-cert-dir")
            .arg(&self.dir)
            .args([
                "-dc",
                &o.datacenters.to_string(),
                "-cluster",
                &o.clusters.to_string(),
            ])
            .args(["-host", &o.hosts.to_string(), "-vm", &o.vms.to_string()])
            .args([
                "-about-version",
                &o.about_version,
                "-about-api-version",
                &o.api_version,
            ])
            .args(["-template", &o.template_name, "-exit-on-stdin-eof"])
            .args(
                o.hardware_version
                    .iter()
                    .flat_map(|v| ["-hardware-version", v.as_str()]),
            )
            .args(
                o.template_hardware_version
                    .iter()
                    .flat_map(|v| ["-template-hardware-version", v.as_str()]),
            )
            .args(
                o.duplicate_template_folder
                    .iter()
                    .flat_map(|v| ["-duplicate-template-folder", v.as_str()]),
            )
            .env("TMPDIR", &tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(l) = &o.limited_user {
            cmd.args([
                "-limited-user",
                l.username(),
                "-limited-password",
                l.password(),
            ]);
            cmd.args(["-limited-missing", &o.limited_missing.join(",")]);
        }
        if let Some(t) = o.session_idle_timeout {
            cmd.arg("-session-idle-timeout")
                .arg(format!("{}ms", t.as_millis()));
        }
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SimError::Io(std::io::Error::other("no stdio pipes")));
        };
        // Drain both pipes for the process's whole life so it never blocks on a full pipe.
        let tail = Arc::new(Mutex::new(String::new()));
        {
            let tail = tail.clone();
            std::thread::spawn(move || drain_stderr(stderr, &tail));
        }
        let (tx, rx) = mpsc::channel();
        let (armed_tx, armed_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(json) = line.strip_prefix("VCSIM_READY ") {
                    let _ = tx.send(json.to_string());
                    sent = true;
                } else if let Some(ack) = line.strip_prefix("VCSIM_ARMED ") {
                    let _ = armed_tx.send(ack.to_string());
                }
            }
        });
        let fail = |child: &mut Child, reason: &str| {
            let _ = child.kill();
            let _ = child.wait();
            // Give the stderr thread a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(50));
            let stderr = tail.lock().map(|s| s.clone()).unwrap_or_default();
            let reason = if stderr.contains("address already in use") {
                "address in use".to_string()
            } else {
                reason.to_string()
            };
            SimError::Startup {
                addr: self.addr,
                reason,
                stderr,
            }
        };
        let json = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(j) => j,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(&mut child, "exited before ready"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(fail(&mut child, "not ready in time"));
            }
        };
        self.ready = match serde_json::from_str(&json) {
            Ok(r) => r,
            Err(e) => return Err(fail(&mut child, &format!("bad ready line: {e}"))),
        };
        self.stderr = tail;
        self.child = Some((child, stdin));
        self.armed = Some(Mutex::new(armed_rx));
        Ok(())
    }

    /// Kills the process and starts it again on the same address with the same CA: all
    /// simulator state (sessions, tags, folders, clones) is lost, as in a vCenter restart.
    pub fn restart(&mut self) -> Result<(), SimError> {
        self.kill();
        let mut last = None;
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(SimError::Startup { reason, .. }) if reason == "address in use" => {
                    last = Some(reason);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
        Err(SimError::Startup {
            addr: self.addr,
            reason: last.unwrap_or_default(),
            stderr: self.stderr_tail(),
        })
    }

    /// Fails the next `count` calls of SOAP method `method` (e.g. `CreateFolder`) with
    /// `SystemError`, the fault vCenter answers for an internal error such as a vpxd
    /// service restart (tools/vcsim/main.go `faultBursts`). A restart disarms them.
    pub fn inject_system_errors(&mut self, method: &str, count: u32) -> Result<(), SimError> {
        use std::io::Write;
        let Some((_, stdin)) = self.child.as_mut() else {
            return Err(SimError::Io(std::io::Error::other("vcsim is not running")));
        };
        writeln!(stdin, "system-error {method} {count}")?;
        stdin.flush()?;
        // Armed only once the helper says so; bounded, so a helper built
        // before acknowledgements existed fails the test instead of hanging.
        let want = format!("{method} {count}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let rx = self
            .armed
            .as_ref()
            .ok_or_else(|| SimError::Io(std::io::Error::other("vcsim is not running")))?;
        let rx = rx
            .lock()
            .map_err(|_| SimError::Io(std::io::Error::other("vcsim ack channel poisoned")))?;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(ack) if ack == want => return Ok(()),
                Ok(_) => continue,
                Err(_) => {
                    return Err(SimError::Io(std::io::Error::other(format!(
                        "vcsim did not acknowledge arming {want} within 10 s (rebuild it: tools/vcsim/build.sh)"
                    ))));
                }
            }
        }
    }

    /// Stops the process now (the fixture can be restarted with [`Vcsim::restart`]).
    pub fn kill(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Server name as a client would configure it (`127.x.y.z`, port 443 implied).
    pub fn server(&self) -> &str {
        &self.ready.server
    }

    /// Loopback address the instance listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Administrator credentials.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(&self.opts.username, &self.opts.password)
    }

    /// Administrator user name.
    pub fn username(&self) -> &str {
        &self.opts.username
    }

    /// Administrator password.
    pub fn password(&self) -> &str {
        &self.opts.password
    }

    /// The limited user's credentials, when configured.
    pub fn limited_credentials(&self) -> Option<Credentials> {
        self.opts.limited_user.clone()
    }

    /// PEM file of the CA that signed the server certificate (stable across restarts).
    pub fn ca_pem_path(&self) -> &Path {
        Path::new(&self.ready.ca_file)
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.ca_pem_path())
    }

    /// SHA-256 thumbprint of the current server certificate (changes on restart).
    pub fn server_thumbprint(&self) -> std::io::Result<String> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let pem = std::fs::read(self.dir.join("server.pem"))?;
        let der = CertificateDer::from_pem_slice(&pem)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(crate::thumbprint_sha256(&der))
    }

    /// Inventory paths of the template VMs (one per datacenter).
    pub fn template_paths(&self) -> &[String] {
        &self.ready.templates
    }

    /// Inventory paths of the VMs named like the template in another folder (see
    /// [`VcsimOptions::duplicate_template_folder`]).
    pub fn duplicate_template_paths(&self) -> &[String] {
        &self.ready.duplicates
    }

    /// The govmomi module version the running simulator was built from (`v0.56.0`).
    pub fn govmomi_version(&self) -> &str {
        &self.ready.govmomi
    }

    /// Hardware version of the inventory's VMs (`vmx-19`).
    pub fn hardware_version(&self) -> &str {
        &self.ready.hardware_version
    }

    /// Hardware version of the templates.
    pub fn template_hardware_version(&self) -> &str {
        &self.ready.template_hardware_version
    }

    /// Inventory paths created at startup.
    pub fn inventory(&self) -> &Inventory {
        &self.ready.inventory
    }

    /// Options the instance was started with.
    pub fn options(&self) -> &VcsimOptions {
        &self.opts
    }

    /// Last lines the simulator wrote to stderr (for test diagnostics).
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Client configuration for the administrator, TLS verified against the instance's CA,
    /// short timeouts suited to tests.
    pub fn client_config(&self) -> std::io::Result<ClientConfig> {
        self.client_config_for(self.credentials())
    }

    /// As [`Vcsim::client_config`] for other credentials.
    pub fn client_config_for(&self, credentials: Credentials) -> std::io::Result<ClientConfig> {
        let mut cfg = ClientConfig::new(self.server(), credentials)
            .with_tls(TlsOptions::with_ca_pem(self.ca_pem()?))
            .with_timeout(Duration::from_secs(20));
        cfg.connect_timeout = Duration::from_secs(5);
        cfg.task_poll_interval = Duration::from_millis(20);
        Ok(cfg)
    }

    /// A new administrator client (own sessions) for this instance.
    pub fn client(&self) -> Result<Client, crate::Error> {
        let cfg = self
            .client_config()
            .map_err(|e| crate::Error::Config(format!("reading vcsim CA: {e}")))?;
        Client::new(cfg)
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes work directories left by test processes that were killed before their fixtures
/// could clean up (the simulators themselves exit when their parent dies).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("vcfm-vcsim-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn placeholder() -> Ready {
    Ready {
        server: String::new(),
        ca_file: String::new(),
        govmomi: String::new(),
        hardware_version: String::new(),
        template_hardware_version: String::new(),
        templates: Vec::new(),
        duplicates: Vec::new(),
        inventory: Inventory::default(),
    }
}

fn drain_stderr(mut stderr: impl Read, tail: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut t) = tail.lock() {
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if t.len() > 16 * 1024 {
                        let mut cut = t.len() - 8 * 1024;
                        while !t.is_char_boundary(cut) {
                            cut += 1;
                        }
                        t.drain(..cut);
                    }
                }
            }
        }
    }
}
