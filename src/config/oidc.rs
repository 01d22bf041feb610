//! Single sign-on through an OpenID provider. These settings only make sense
//! together, so they are read as one: absent unless `oidc.issuer_url` is set,
//! and then the client's id and secret are required.

use std::str::FromStr;
use std::time::Duration;

use super::setting::{Key, Settings, Source, http_url, seconds};
use super::{ConfigError, Secret};

/// Single sign-on through an OpenID provider (Authentik: `https://HOST/application/o/SLUG/`).
#[derive(Clone, Debug)]
pub struct OidcSettings {
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where the provider sends the browser back; default `<public URL>/auth/callback`.
    pub redirect_url: Option<String>,
    /// `oidc.group_roles`: `group=admin` and `group=workspace:<uuid>:<ROLE>`, comma-separated.
    pub group_roles: Vec<GroupRole>,
    /// How old the provider's discovery document and keys may be when a login
    /// starts before they are fetched again; zero: at every login.
    pub discovery_refresh: Duration,
}

impl OidcSettings {
    pub const DEFAULT_DISCOVERY_REFRESH: Duration = Duration::from_secs(60);
}

const ISSUER_URL: Key = Key {
    key: "oidc.issuer_url",
    env: "MOSAIC_OIDC_ISSUER_URL",
};
const CLIENT_ID: Key = Key {
    key: "oidc.client_id",
    env: "MOSAIC_OIDC_CLIENT_ID",
};
const CLIENT_SECRET: Key = Key {
    key: "oidc.client_secret",
    env: "MOSAIC_OIDC_CLIENT_SECRET",
};
const REDIRECT_URL: Key = Key {
    key: "oidc.redirect_url",
    env: "MOSAIC_OIDC_REDIRECT_URL",
};
const GROUP_ROLES: Key = Key {
    key: "oidc.group_roles",
    env: "MOSAIC_OIDC_GROUP_ROLES",
};
const DISCOVERY_REFRESH: Key = Key {
    key: "oidc.discovery_refresh_s",
    env: "MOSAIC_OIDC_DISCOVERY_REFRESH_S",
};

impl Settings for Option<OidcSettings> {
    fn keys(out: &mut Vec<Key>) {
        out.extend([
            ISSUER_URL,
            CLIENT_ID,
            CLIENT_SECRET,
            REDIRECT_URL,
            GROUP_ROLES,
            DISCOVERY_REFRESH,
        ]);
    }

    fn apply(&mut self, source: &mut Source) -> Result<(), ConfigError> {
        let issuer = source.take(ISSUER_URL.key);
        let id = source.take(CLIENT_ID.key);
        let secret = source.take(CLIENT_SECRET.key);
        let redirect = source.take(REDIRECT_URL.key);
        let roles = source.take(GROUP_ROLES.key);
        let refresh = source.take(DISCOVERY_REFRESH.key);
        let Some(issuer) = issuer else {
            if let Some(r) = [&id, &secret, &redirect, &roles, &refresh].into_iter().flatten().next() {
                return Err(r.error(ISSUER_URL.key, "required when any oidc setting is given"));
            }
            *self = None;
            return Ok(());
        };
        let issuer_url = http_url()(&issuer.value).map_err(|e| issuer.error(ISSUER_URL.key, e))?;
        let missing = |k: Key| ConfigError {
            field: k.key.to_string(),
            source_name: k.env.to_string(),
            reason: format!("required when oidc.issuer_url is set (by {})", issuer.source_name),
        };
        let id = id.ok_or_else(|| missing(CLIENT_ID))?;
        if id.value.trim().is_empty() {
            return Err(id.error(CLIENT_ID.key, "must not be empty"));
        }
        let secret = secret.ok_or_else(|| missing(CLIENT_SECRET))?;
        if secret.value.is_empty() {
            return Err(secret.error(CLIENT_SECRET.key, "must not be empty"));
        }
        let redirect_url = match &redirect {
            Some(r) => Some(http_url()(&r.value).map_err(|e| r.error(REDIRECT_URL.key, e))?),
            None => None,
        };
        let mut group_roles = Vec::new();
        if let Some(r) = &roles {
            for item in r.value.split(',').filter(|i| !i.trim().is_empty()) {
                group_roles.push(item.parse().map_err(|e: String| r.error(GROUP_ROLES.key, e))?);
            }
        }
        let discovery_refresh = match &refresh {
            Some(r) => seconds(0, 24 * 3600)(&r.value).map_err(|e| r.error(DISCOVERY_REFRESH.key, e))?,
            None => OidcSettings::DEFAULT_DISCOVERY_REFRESH,
        };
        *self = Some(OidcSettings {
            issuer_url,
            client_id: id.value,
            client_secret: Secret(secret.value),
            redirect_url,
            group_roles,
            discovery_refresh,
        });
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRole {
    InstanceAdmin {
        group: String,
    },
    Workspace {
        group: String,
        workspace: uuid::Uuid,
        role: String,
    },
}

impl FromStr for GroupRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (group, role) = s.split_once('=').ok_or_else(|| format!("'{s}' is not group=role"))?;
        let group = group.trim().to_string();
        if group.is_empty() {
            return Err(format!("'{s}' names no group"));
        }
        let role = role.trim();
        if role == "admin" {
            return Ok(Self::InstanceAdmin { group });
        }
        let parts: Vec<&str> = role.splitn(3, ':').collect();
        match parts.as_slice() {
            ["workspace", ws, r] if ["OWNER", "ADMIN", "MEMBER", "GUEST"].contains(r) => Ok(Self::Workspace {
                group,
                workspace: ws.parse().map_err(|_| format!("'{ws}' is not a workspace id"))?,
                role: r.to_string(),
            }),
            _ => Err(format!(
                "role '{role}' is not 'admin' or 'workspace:<uuid>:OWNER|ADMIN|MEMBER|GUEST'"
            )),
        }
    }
}
