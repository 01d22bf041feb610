//! `mosaic healthcheck`: the container's health check, which needs no shell
//! and no other program in the image. It asks this instance's `/readyz` on
//! the local listener, with the same settings `serve` has.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::Config;

/// Where `/readyz` is reached from inside the instance's host or container:
/// the listen port on loopback (an unspecified listen address included),
/// under the public host name when TLS is on, since that is the name the
/// certificate is for. Returns the URL and the address to connect to.
pub fn local_target(config: &Config) -> Result<(String, SocketAddr)> {
    let ip = match config.listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let connect = SocketAddr::new(ip, config.listen.port());
    if config.tls.is_none() {
        return Ok((format!("http://{connect}/readyz"), connect));
    }
    let host = match &config.public_url {
        Some(url) => reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .context("public_url has no host")?,
        None => connect.ip().to_string(),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Ok((format!("https://{host}:{}/readyz", connect.port()), connect))
}

/// Succeeds only if `/readyz` answers 200 within `timeout`.
pub async fn check(config: &Config, url: Option<&str>, timeout: Duration) -> Result<()> {
    crate::federation::tls::install_crypto_provider();
    let (url, connect) = match url {
        Some(url) => (url.to_string(), None),
        None => {
            let (url, connect) = local_target(config)?;
            (url, Some(connect))
        }
    };
    let mut builder = crate::federation::tls::client_builder(config.federation.ca_file.as_deref())?.timeout(timeout);
    if let Some(connect) = connect
        && let Some(host) = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    {
        builder = builder.resolve(host.trim_matches(['[', ']']), connect);
    }
    let client = builder.build().context("building the HTTP client")?;
    let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let body = response.text().await.unwrap_or_default();
        bail!("GET {url}: {status} {}", body.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_listener_under_the_certificates_name() {
        let on = |listen: &str, public: Option<&str>, tls: bool| {
            let config = Config {
                listen: listen.parse().unwrap(),
                public_url: public.map(str::to_string),
                tls: tls.then(|| crate::config::TlsFiles {
                    cert_file: "c".into(),
                    key_file: "k".into(),
                }),
                ..Config::default()
            };
            let (url, connect) = local_target(&config).unwrap();
            (url, connect.to_string())
        };
        assert_eq!(
            on("0.0.0.0:8080", Some("https://mosaic.example.org"), false),
            ("http://127.0.0.1:8080/readyz".into(), "127.0.0.1:8080".into())
        );
        assert_eq!(
            on("[::]:9000", None, false),
            ("http://[::1]:9000/readyz".into(), "[::1]:9000".into())
        );
        assert_eq!(
            on("0.0.0.0:8443", Some("https://mosaic.example.org/"), true),
            ("https://mosaic.example.org:8443/readyz".into(), "127.0.0.1:8443".into())
        );
        assert_eq!(
            on("127.0.0.1:8443", None, true),
            ("https://127.0.0.1:8443/readyz".into(), "127.0.0.1:8443".into())
        );
    }
}
