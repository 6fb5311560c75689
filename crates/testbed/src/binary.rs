//! The real `vcfm` executable against a seeded cluster: `vcfm controller` as a child
//! process (so "kill it" means SIGKILL) and the CLI's commands.

use openshift_sim::SimCluster;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Runs the `vcfm` executable (`CARGO_BIN_EXE_vcfm` of the caller) against one cluster.
pub struct Binary {
    exe: PathBuf,
    /// Scratch directory: the CA bundle and one log file per controller start.
    pub dir: tempfile::TempDir,
    /// The administrator's kubeconfig.
    pub kubeconfig: PathBuf,
    /// Both vcsims' CAs (`--vcenter-ca-file`).
    pub ca_bundle: PathBuf,
    /// Namespace the CLI commands name (`-n`).
    pub ns: String,
    controller: Option<Child>,
    log_files: Vec<PathBuf>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill_controller();
    }
}

impl Binary {
    /// `exe` against `sim` as its administrator, CLI commands in `ns`.
    pub fn new(exe: impl Into<PathBuf>, sim: &SimCluster, ns: &str) -> Binary {
        let dir = tempfile::tempdir().expect("scratch dir");
        let ca_bundle = dir.path().join("vcenter-ca.pem");
        std::fs::write(
            &ca_bundle,
            crate::vcenter_ca_bundle(sim).expect("vCenter CAs"),
        )
        .expect("CA bundle");
        Binary {
            exe: exe.into(),
            dir,
            kubeconfig: sim.kubeconfig_path().to_path_buf(),
            ca_bundle,
            ns: ns.into(),
            controller: None,
            log_files: vec![],
        }
    }

    /// A `vcfm controller` command with its log going to a new file: CA bundle and
    /// kubeconfig set, `extra` arguments after them.
    fn controller_command(&mut self, kubeconfig: &Path, extra: &[&str]) -> Command {
        let log = self
            .dir
            .path()
            .join(format!("controller-{}.log", self.log_files.len()));
        let out = std::fs::File::create(&log).expect("controller log");
        let err = out.try_clone().expect("controller log");
        let mut cmd = Command::new(&self.exe);
        cmd.args(["controller", "--log-format", "json", "--vcenter-ca-file"])
            .arg(&self.ca_bundle)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.log_files.push(log);
        cmd
    }

    /// Starts `vcfm controller` (metrics on a free port), detailed logs to a file per start.
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        let kubeconfig = self.kubeconfig.clone();
        let child = self
            .controller_command(&kubeconfig, &["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,vcfm_vsphere=trace,vcfm_controller=debug")
            .spawn()
            .expect("vcfm controller");
        self.controller = Some(child);
    }

    /// A further `vcfm controller` process with extra arguments and environment, managed
    /// by the caller (leader-election tests), as the administrator.
    pub fn spawn_controller(&mut self, extra: &[&str], envs: &[(&str, &str)]) -> Child {
        let kubeconfig = self.kubeconfig.clone();
        self.spawn_controller_as(&kubeconfig, extra, envs)
    }

    /// Like [`Binary::spawn_controller`] with another identity's kubeconfig (e.g. the
    /// shipped service account's).
    pub fn spawn_controller_as(
        &mut self,
        kubeconfig: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Child {
        let mut cmd = self.controller_command(kubeconfig, extra);
        cmd.env("RUST_LOG", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.spawn().expect("vcfm controller")
    }

    /// SIGKILL: no graceful shutdown, no final status write.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything every controller process has logged so far.
    pub fn controller_logs(&self) -> String {
        self.log_files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the `vcfm` CLI (`args`, then `--kubeconfig` and `-n`).
    pub fn vcfm(&self, args: &[&str]) -> Output {
        Command::new(&self.exe)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.ns])
            .stdin(Stdio::null())
            .output()
            .expect("vcfm")
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
