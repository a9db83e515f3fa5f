//! The few reads the plugin makes of its own node's dockerd (`--docker-host`):
//! a network's name and its endpoints, which the plugin protocols never send.
//! Plain HTTP/1.0 over the Unix socket: one request, read to the end.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct Dockerd {
    socket: PathBuf,
}

/// What dockerd said of a network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkInfo {
    pub name: String,
    /// Endpoint ids of the containers attached (on this node).
    pub endpoints: BTreeSet<String>,
}

impl Dockerd {
    /// `host`: `unix:///path` or a bare path.
    pub fn new(host: &str) -> anyhow::Result<Self> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if !path.starts_with('/') {
            anyhow::bail!("--docker-host {host:?}: only unix:///PATH (a local socket) is supported");
        }
        Ok(Self {
            socket: PathBuf::from(path),
        })
    }

    async fn get(&self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        self.request("GET", path, None, Duration::from_secs(5)).await
    }

    /// One request to dockerd's Engine API (`body` sent as JSON), read to
    /// the end: the status code and the body. Also used by berth-bench to
    /// drive a Docker peer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let work = async {
            let mut s = tokio::net::UnixStream::connect(&self.socket).await?;
            let body = body.map(Value::to_string).unwrap_or_default();
            let head = if body.is_empty() {
                format!("{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n")
            } else {
                format!(
                    "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
            };
            s.write_all(head.as_bytes()).await?;
            s.write_all(body.as_bytes()).await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            let split = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or_else(|| std::io::Error::other("dockerd's answer has no end of headers"))?;
            let head = String::from_utf8_lossy(&buf[..split]);
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("dockerd's answer has no status"))?;
            Ok((status, buf[split + 4..].to_vec()))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| std::io::Error::other(format!("dockerd did not answer within {timeout:?}")))?
    }

    /// The network `id` as dockerd has it; `None` when dockerd does not know it (yet).
    pub async fn network(&self, id: &str) -> std::io::Result<Option<NetworkInfo>> {
        let (status, body) = self.get(&format!("/networks/{id}")).await?;
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(std::io::Error::other(format!(
                "dockerd answered {status} for network {id}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let v: Value = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
        let name = v["Name"].as_str().unwrap_or_default().to_string();
        let endpoints = v["Containers"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|c| c["EndpointID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(NetworkInfo { name, endpoints }))
    }
}
