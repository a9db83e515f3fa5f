//! `berth cert`: the cluster CA and the certificates of API servers, agents
//! and clients, made locally with rcgen (ECDSA P-256). The role goes into a
//! URI subject alternative name (`spiffe://berth/api`,
//! `spiffe://berth/agent/NODE`, `spiffe://berth/{admin,operator,viewer}/NAME`)
//! that the servers check on every call. `berth cert etcd` issues certificates with
//! no berth role, for etcd members and berth-api's etcd client.
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth_core::names::validate_name;
use berth_core::tls::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::args::{CertCommand, CertCommon};

const CA_DAYS: u32 = 3650;
const LEAF_DAYS: u32 = 825;

/// Runs one `berth cert` command; prints what it wrote.
pub fn run(cmd: CertCommand) -> Result<i32> {
    match cmd {
        CertCommand::Ca(a) => ca(&a.name, &a.common),
        CertCommand::Api(a) => leaf(Some(Role::Api), &a.name, &a.san, &a.common, "api".to_string()),
        CertCommand::Etcd(a) => {
            validate_name("etcd name", &a.name)?;
            let stem = format!("etcd-{}", a.name);
            leaf(None, &a.name, &a.san, &a.common, stem)
        }
        CertCommand::Agent(a) => {
            validate_name("node name", &a.node)?;
            let stem = format!("agent-{}", a.node);
            leaf(
                Some(Role::Agent(a.node.clone())),
                &a.node,
                &a.san,
                &a.common,
                stem,
            )
        }
        CertCommand::Client(a) => {
            validate_name("client name", &a.name)?;
            let stem = format!("client-{}", a.name);
            let access = a
                .role
                .parse()
                .map_err(|e: String| anyhow::anyhow!("invalid --role: {e}"))?;
            leaf(Some(Role::client(&a.name, access)), &a.name, &[], &a.common, stem)
        }
    }?;
    Ok(0)
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // An hour back, for clocks that are a little behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

fn paths(common: &CertCommon, default_stem: String) -> Result<(PathBuf, PathBuf)> {
    let stem = common.out.clone().unwrap_or(default_stem);
    if stem.is_empty() || stem.contains('/') {
        bail!("invalid --out {stem:?}: a file name stem without '/'");
    }
    let crt = common.dir.join(format!("{stem}.crt"));
    let key = common.dir.join(format!("{stem}.key"));
    if !common.force {
        for p in [&crt, &key] {
            if p.exists() {
                bail!("{} exists; remove it or pass --force", p.display());
            }
        }
    }
    Ok((crt, key))
}

/// Writes `contents` to `path` with `mode`, replacing it.
fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn ca(name: &str, common: &CertCommon) -> Result<()> {
    std::fs::create_dir_all(&common.dir)
        .with_context(|| format!("cannot create {}", common.dir.display()))?;
    let (crt, key_path) = paths(common, "ca".to_string())?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "berth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, common.days.unwrap_or(CA_DAYS));
    let cert = params.self_signed(&key)?;
    write(&key_path, &key.serialize_pem(), 0o600)?;
    write(&crt, &cert.pem(), 0o644)?;
    println!("wrote {} and {}", crt.display(), key_path.display());
    Ok(())
}

fn san(s: &str) -> Result<SanType> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !valid {
        bail!("invalid --san {s:?}: not an IP address or a DNS name");
    }
    Ok(SanType::DnsName(s.try_into()?))
}

/// A certificate signed by DIR/ca.*; `role: None` for etcd (no berth role).
fn leaf(role: Option<Role>, name: &str, sans: &[String], common: &CertCommon, stem: String) -> Result<()> {
    let ca_crt = common.dir.join("ca.crt");
    let ca_key = common.dir.join("ca.key");
    let ca_pem = std::fs::read_to_string(&ca_crt).with_context(|| {
        format!(
            "cannot read the CA certificate {} (run `berth cert ca` first)",
            ca_crt.display()
        )
    })?;
    let ca_key_pem = std::fs::read_to_string(&ca_key)
        .with_context(|| format!("cannot read the CA key {}", ca_key.display()))?;
    let issuer_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| anyhow::anyhow!("{}: not a usable private key: {e}", ca_key.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, issuer_key)
        .map_err(|e| anyhow::anyhow!("{}: not a usable CA certificate: {e}", ca_crt.display()))?;
    let (crt, key_path) = paths(common, stem)?;

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "berth");
    params.distinguished_name = dn;
    if let Some(role) = &role {
        params
            .subject_alt_names
            .push(SanType::URI(role.uri().try_into()?));
    }
    for s in sans {
        params.subject_alt_names.push(san(s)?);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // API servers and agents are both servers and clients of each other.
    params.extended_key_usages = match role {
        Some(Role::Client { .. } | Role::LegacyClient(_)) => vec![ExtendedKeyUsagePurpose::ClientAuth],
        _ => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, common.days.unwrap_or(LEAF_DAYS));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write(&key_path, &key.serialize_pem(), 0o600)?;
    write(&crt, &cert.pem(), 0o644)?;
    let extra = if sans.is_empty() {
        String::new()
    } else {
        format!(", names {}", sans.join(", "))
    };
    let what = role.map_or_else(|| "no berth role".to_string(), |r| r.uri());
    println!(
        "wrote {} and {} ({what}{extra})",
        crt.display(),
        key_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans() {
        assert!(matches!(san("192.168.205.10").unwrap(), SanType::IpAddress(_)));
        assert!(matches!(san("berth-api").unwrap(), SanType::DnsName(_)));
        assert!(matches!(san("api.example.org").unwrap(), SanType::DnsName(_)));
        for bad in ["", "a b", "-x", "x..y", "spiffe://berth/api"] {
            assert!(san(bad).is_err(), "{bad}");
        }
    }
}
