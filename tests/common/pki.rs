//! A test PKI made with the `openssl` command (scripts/test.sh installs it): a CA with a server
//! certificate for 127.0.0.1 and a client certificate, and an unrelated CA. Shared by the
//! gateway's end-to-end tests and edge-alerts' (which include this file by path).

use std::path::PathBuf;
use std::process::Command;

const PKI_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
";

/// A test CA with a server certificate for 127.0.0.1 and a client certificate, plus an
/// unrelated self-signed CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pki.cnf"), PKI_CONFIG).expect("write pki.cnf");
        let pki = Self { dir };
        const KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for ca in ["ca", "other-ca"] {
            pki.openssl(&format!(
                "req -x509 -config pki.cnf -extensions ca_ext {KEY} -days 2 \
                 -keyout {ca}.key -out {ca}.pem -subj /CN=edge-test-{ca}"
            ));
        }
        for (serial, leaf) in [(1, "server"), (2, "client")] {
            pki.openssl(&format!(
                "req -new -config pki.cnf {KEY} -keyout {leaf}.key -out {leaf}.csr \
                 -subj /CN=edge-test-{leaf}"
            ));
            pki.openssl(&format!(
                "x509 -req -in {leaf}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 2 \
                 -extfile pki.cnf -extensions {leaf}_ext -out {leaf}.pem"
            ));
        }
        pki
    }

    /// Runs `openssl` in the PKI's directory with `args` (split at whitespace).
    pub fn openssl(&self, args: &str) {
        let output = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(self.dir.path())
            .output()
            .expect(
                "the openssl command makes the test certificates (scripts/test.sh installs it)",
            );
        assert!(
            output.status.success(),
            "openssl {args}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Mosquitto settings for a TLS listener with the server certificate.
    pub fn tls_listener(&self, port: u16, require_certificate: bool) -> String {
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate {require_certificate}\nallow_anonymous true\n",
            self.path("ca.pem").display(),
            self.path("server.pem").display(),
            self.path("server.key").display(),
        )
    }
}
