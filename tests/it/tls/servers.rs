//! The TLS servers of the TLS tests: a test PKI made with rcgen, a TLS terminator in front of a
//! plain-HTTP server, and a Postgres cluster of the test's own with `ssl = on`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::notify::harness::{free_port, scratch_dir};

/// A test CA, a server certificate it signed for `localhost` and 127.0.0.1, and an unrelated
/// CA (the "wrong" one), as PEM files in a fresh directory.
pub(super) struct Pki {
    pub(super) dir: PathBuf,
    server_cert_pem: String,
    server_key_pem: String,
}

impl Pki {
    pub(super) fn new() -> Self {
        let dir = scratch_dir("tls");
        let (ca, ca_key) = make_ca("logexport test CA");
        let (other, _) = make_ca("some other CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server = params.signed_by(&key, &ca, &ca_key).unwrap();
        let pki = Self {
            dir,
            server_cert_pem: server.pem(),
            server_key_pem: key.serialize_pem(),
        };
        std::fs::write(pki.ca(), ca.pem()).unwrap();
        std::fs::write(pki.wrong_ca(), other.pem()).unwrap();
        std::fs::write(pki.cert(), &pki.server_cert_pem).unwrap();
        std::fs::write(pki.key(), &pki.server_key_pem).unwrap();
        pki
    }

    /// The CA that signed the servers' certificate.
    pub(super) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that signed nothing the servers present.
    pub(super) fn wrong_ca(&self) -> PathBuf {
        self.dir.join("wrong-ca.pem")
    }

    pub(super) fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub(super) fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    (params.self_signed(&key).unwrap(), key)
}

/// A TLS terminator with the test certificate in front of a plain-HTTP server at `backend`
/// (Garage, the Quay stand-in, a callback receiver): what a TLS-terminating load balancer does.
/// Counts the connections whose handshake succeeded.
pub(super) struct TlsFront {
    pub(super) port: u16,
    handshakes: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub(super) async fn start(pki: &Pki, backend: SocketAddr) -> Self {
        logexport::telemetry::install_crypto_provider();
        let certs = rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here: nothing is forwarded.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Ok(mut upstream) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            port,
            handshakes,
            task,
        }
    }

    pub(super) fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub(super) fn handshakes(&self) -> usize {
        self.handshakes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Postgres cluster of the test's own with `ssl = on` and only `hostssl` connections allowed,
/// run as the `postgres` user when the test runs as root (Postgres refuses root). Stopped and
/// deleted when dropped.
pub(super) struct TlsPostgres {
    dir: PathBuf,
    pub(super) port: u16,
}

impl TlsPostgres {
    pub(super) async fn start(pki: &Pki) -> Self {
        let dir = std::env::temp_dir().join(format!("logexport-tls-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let this = Self {
            dir,
            port: free_port(),
        };
        std::fs::copy(pki.cert(), this.dir.join("server.crt")).unwrap();
        std::fs::copy(pki.key(), this.dir.join("server.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            this.dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&this.dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory");
        }
        let data = this.dir.join("data").display().to_string();
        this.pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        // TLS only: a client that gave up on TLS could not get in at all.
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n";
        std::fs::write(this.dir.join("data/pg_hba.conf"), hba).unwrap();
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
            this.port,
            dir = this.dir.display()
        );
        let log = this.dir.join("postgres.log").display().to_string();
        this.pg(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
        this
    }

    pub(super) fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
            self.port
        )
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let binary = Path::new("/usr/lib/postgresql/15/bin").join(tool);
        let binary = if binary.exists() {
            binary
        } else {
            PathBuf::from(tool)
        };
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            std::process::Command::new(&binary)
        };
        let output = command.args(args).output().expect("run a Postgres tool");
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl"]);
            c
        } else {
            std::process::Command::new("pg_ctl")
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
