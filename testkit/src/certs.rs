//! Certificates for tests, made by `openssl` in a directory: a CA, a server
//! certificate for 127.0.0.1 and localhost, and a client certificate; and a
//! browser profile home whose NSS database trusts that CA, so that headless
//! Chromium accepts the servers' certificates as a visitor's browser would
//! accept a real one (no `--ignore-certificate-errors`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct TestCertificates {
    pub ca_file: PathBuf,
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
}

fn run(program: &str, dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {program} (ci/setup.sh installs it)"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl TestCertificates {
    /// Makes them in `dir` (`ca.crt`, `server.crt`/`.key`,
    /// `client.crt`/`.key`), valid for a day.
    pub fn make(dir: &Path) -> anyhow::Result<Self> {
        let openssl = |args: &[&str]| run("openssl", dir, args);
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=chatup test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ])?;
        // A server's certificate also serves as a client's: Redis nodes
        // show theirs to each other (replication, the cluster bus).
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )?;
        // Extensions make X.509 v3 certificates: rustls refuses v1 ones.
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN=chatup test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ])?;
            let mut sign = vec![
                "x509",
                "-req",
                "-days",
                "1",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
            ];
            let (csr, crt) = (format!("{name}.csr"), format!("{name}.crt"));
            sign.extend(["-in", &csr, "-out", &crt, "-extfile", ext]);
            openssl(&sign)?;
        }
        Ok(Self {
            ca_file: dir.join("ca.crt"),
            server_cert_file: dir.join("server.crt"),
            server_key_file: dir.join("server.key"),
            client_cert_file: dir.join("client.crt"),
            client_key_file: dir.join("client.key"),
        })
    }

    /// A home directory (`$HOME` for Chromium) whose NSS database
    /// (`.pki/nssdb`, where Chromium on Linux keeps the user's trusted
    /// certificates) trusts this CA for websites.
    pub fn browser_home(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let home = dir.join("browser-home");
        let db = home.join(".pki/nssdb");
        std::fs::create_dir_all(&db)?;
        let db_arg = format!("sql:{}", db.display());
        run("certutil", dir, &["-N", "--empty-password", "-d", &db_arg])?;
        let ca = self.ca_file.display().to_string();
        run(
            "certutil",
            dir,
            &[
                "-A",
                "-d",
                &db_arg,
                "-t",
                "C,,",
                "-n",
                "chatup test CA",
                "-i",
                &ca,
            ],
        )?;
        Ok(home)
    }
}
