//! Container probes (startup, liveness, readiness) with the three handlers Kubernetes has:
//! `exec` (a command in the container's environment), `httpGet` (2xx/3xx answers succeed) and
//! `tcpSocket` (a connection succeeds). Containers share the node's network, so ports are on
//! the node's address.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Handler {
    Exec(Vec<String>),
    Http { host: String, port: u16, path: String },
    Tcp { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// A container's probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
}

impl Probes {
    /// Reads the probes of a container spec; `host` is the address the container listens on.
    pub fn of(container: &Value, host: &str) -> Probes {
        let parse = |key: &str| Probe::parse(&container[key], container, host);
        Probes { startup: parse("startupProbe"), liveness: parse("livenessProbe"), readiness: parse("readinessProbe") }
    }
}

fn seconds(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

/// A probe port: a number, or the name of one of the container's ports.
fn port(v: &Value, container: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(name) => name.parse().ok().or_else(|| {
            container["ports"].as_array()?.iter().find(|p| p["name"] == name.as_str())?["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

impl Probe {
    fn parse(probe: &Value, container: &Value, host: &str) -> Option<Probe> {
        if !probe.is_object() {
            return None;
        }
        let handler = if let Some(command) = probe["exec"]["command"].as_array() {
            Handler::Exec(command.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        } else if probe["httpGet"].is_object() {
            let http = &probe["httpGet"];
            Handler::Http {
                host: http["host"].as_str().unwrap_or(host).to_string(),
                port: port(&http["port"], container)?,
                path: http["path"].as_str().unwrap_or("/").to_string(),
            }
        } else if probe["tcpSocket"].is_object() {
            let tcp = &probe["tcpSocket"];
            Handler::Tcp {
                host: tcp["host"].as_str().unwrap_or(host).to_string(),
                port: port(&tcp["port"], container)?,
            }
        } else {
            return None;
        };
        Some(Probe {
            handler,
            initial_delay: seconds(&probe["initialDelaySeconds"], 0),
            period: seconds(&probe["periodSeconds"], 10).max(Duration::from_secs(1)),
            timeout: seconds(&probe["timeoutSeconds"], 1).max(Duration::from_secs(1)),
            success_threshold: probe["successThreshold"].as_u64().unwrap_or(1).max(1) as u32,
            failure_threshold: probe["failureThreshold"].as_u64().unwrap_or(3).max(1) as u32,
        })
    }

    /// One check; a timeout counts as a failure.
    pub async fn check(&self, env: &[(String, String)], cwd: Option<&std::path::Path>) -> bool {
        tokio::time::timeout(self.timeout, self.run(env, cwd)).await.unwrap_or(false)
    }

    async fn run(&self, env: &[(String, String)], cwd: Option<&std::path::Path>) -> bool {
        match &self.handler {
            Handler::Exec(argv) => {
                let Some((program, args)) = argv.split_first() else { return false };
                let mut command = tokio::process::Command::new(program);
                command.args(args).env_clear().envs(env.iter().map(|(k, v)| (k, v))).kill_on_drop(true);
                command
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                if let Some(dir) = cwd {
                    command.current_dir(dir);
                }
                command.status().await.is_ok_and(|s| s.success())
            }
            Handler::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port)).await.is_ok(),
            Handler::Http { host, port, path } => {
                let Ok(mut stream) = tokio::net::TcpStream::connect((host.as_str(), *port)).await else { return false };
                let request = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: axle-probe\r\n\r\n");
                if stream.write_all(request.as_bytes()).await.is_err() {
                    return false;
                }
                let mut head = [0u8; 32];
                let n = stream.read(&mut head).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n]);
                let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                (200..400).contains(&code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probes_parse_handlers_named_ports_and_defaults() {
        let container = json!({"ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
            "readinessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30}});
        let probes = Probes::of(&container, "127.0.0.1");
        let live = probes.liveness.expect("liveness");
        assert_eq!(live.handler, Handler::Http { host: "127.0.0.1".into(), port: 8080, path: "/healthz".into() });
        assert_eq!((live.period, live.failure_threshold), (Duration::from_secs(2), 3));
        assert_eq!(probes.readiness.expect("readiness").handler, Handler::Tcp { host: "127.0.0.1".into(), port: 8080 });
        assert_eq!(probes.startup.expect("startup").failure_threshold, 30);
        assert_eq!(Probes::of(&json!({}), "h"), Probes::default());
    }

    #[tokio::test]
    async fn probe_checks_succeed_and_fail() {
        let container = json!({});
        let exec = |cmd: &str| {
            Probe::parse(&json!({"exec": {"command": ["sh", "-c", cmd]}}), &container, "127.0.0.1").expect("probe")
        };
        let path = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        assert!(exec("exit 0").check(&path, None).await);
        assert!(!exec("exit 1").check(&path, None).await);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tcp = Probe::parse(&json!({"tcpSocket": {"port": port}}), &container, "127.0.0.1").expect("probe");
        assert!(tcp.check(&[], None).await);
        drop(listener);
        assert!(!tcp.check(&[], None).await);
    }
}
