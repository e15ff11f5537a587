//! TLS material made at test time with the `openssl` command: a private CA,
//! a server certificate for `localhost` and 127.0.0.1 signed by it, a client
//! certificate for mutual TLS, and an unrelated CA for the wrong-CA case.
//! Nothing is checked in, so nothing expires in the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The files of one test's certificates, removed on drop.
#[derive(Debug)]
pub struct Certificates {
    dir: TempDir,
}

impl Certificates {
    /// Makes every file; panics with openssl's output if it fails (a
    /// machine without `openssl` cannot run the TLS tests).
    pub fn generate() -> Certificates {
        let dir = tempfile::Builder::new()
            .prefix("template-test-tls-")
            .tempdir_in(std::env::temp_dir())
            .expect("a temporary directory");
        let certificates = Certificates { dir };
        certificates.make_ca("ca");
        certificates.make_ca("other-ca");
        // Cluster nodes present their certificate as clients on the cluster
        // bus too, and the bus always checks it.
        certificates.make_signed("server", "localhost", "serverAuth,clientAuth");
        certificates.make_signed("client", "worker", "clientAuth");
        certificates
    }

    /// `<name>.crt` or `<name>.key`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The private CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }

    /// `redis-server` arguments for TLS on `tls_port`, with the server
    /// certificate and the private CA for client certificates;
    /// `auth_clients` is `no`, `optional` or `yes`.
    pub fn server_args(&self, tls_port: u16, auth_clients: &str) -> Vec<String> {
        let path = |name: &str| self.file(name).display().to_string();
        [
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path("server.crt"),
            "--tls-key-file".to_owned(),
            path("server.key"),
            "--tls-ca-cert-file".to_owned(),
            path("ca.crt"),
            "--tls-auth-clients".to_owned(),
            auth_clients.to_owned(),
        ]
        .into()
    }

    fn make_ca(&self, name: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=Test {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }

    /// A certificate for `common_name` signed by `ca`, valid for localhost
    /// and 127.0.0.1, for `usage` (`serverAuth` or `clientAuth`).
    fn make_signed(&self, name: &str, common_name: &str, usage: &str) {
        let dir = self.dir.path();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={common_name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let extensions = format!(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage={usage}\n"
        );
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run openssl (the TLS tests need it): {error}"));
    assert!(
        output.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
