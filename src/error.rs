//! Errors a client can see, each with a stable `extensions.code`.
//!
//! Deliberately not `Display`: that keeps async-graphql's blanket
//! `From<impl Display>` away, so every error reaches the client through
//! `From<AppError>` below, with its code.

use std::sync::Arc;

use async_graphql::ErrorExtensions;

#[derive(Clone, Debug)]
pub enum AppError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    BadInput(String),
    Conflict(String),
    Timeout,
    /// A peer instance could not answer (PEER_UNAVAILABLE, PEER_TIMEOUT, ...).
    Peer {
        code: &'static str,
        message: String,
        instance: String,
        /// The peer's own refusal code (e.g. GRANT_DENIED), when it refused.
        peer_code: Option<String>,
        /// When a peer that limits our rate (PEER_RATE_LIMITED) may be asked again.
        retry_after_ms: Option<u64>,
    },
    /// A per-caller limit is reached (TOO_MANY_SUBSCRIPTIONS, ...).
    Limit {
        code: &'static str,
        message: String,
    },
    /// Bad input that has its own code (TITLE_TOO_LONG, INVALID_SLUG, ...).
    Invalid {
        code: &'static str,
        message: String,
    },
    Internal(Arc<anyhow::Error>),
}

impl AppError {
    /// A refusal by the policies, said in the words of the operation.
    pub fn forbidden_as(self, message: &str) -> Self {
        match self {
            Self::Forbidden(_) => Self::Forbidden(message.into()),
            other => other,
        }
    }

    /// Names the input field a bad-input refusal is about.
    pub fn in_field(self, field: &str) -> Self {
        match self {
            Self::BadInput(m) => Self::BadInput(format!("{field}: {m}")),
            other => other,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadInput(_) => "BAD_USER_INPUT",
            Self::Conflict(_) => "CONFLICT",
            Self::Timeout => "TIMEOUT",
            Self::Peer { code, .. } | Self::Limit { code, .. } | Self::Invalid { code, .. } => code,
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) | Self::BadInput(m) | Self::Conflict(m) => m.clone(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::Timeout => "the database did not answer in time".into(),
            Self::Peer { message, .. } | Self::Limit { message, .. } | Self::Invalid { message, .. } => message.clone(),
            Self::Internal(_) => "internal error".into(),
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(Arc::new(e.into()))
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            return match code.as_str() {
                // RLS WITH CHECK failures and missing privileges.
                "42501" => Self::Forbidden("not allowed by your role in this workspace".into()),
                "23505" => Self::Conflict("already exists".into()),
                "23503" => Self::BadInput("refers to something that does not exist".into()),
                // check violation, too long, bad text representation, bad datetime,
                // datetime out of range, number out of range, NUL or unsupported character
                "23514" | "22001" | "22P02" | "22007" | "22008" | "22003" | "22021" | "22P05" => {
                    Self::BadInput(format!("invalid value: {}", db.message()))
                }
                "MOS01" => Self::BadInput(db.message().to_string()),
                "MOS43" => Self::Conflict(db.message().to_string()),
                "57014" => Self::Timeout,
                _ => Self::internal(e),
            };
        }
        Self::internal(e)
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        if let AppError::Internal(inner) = &e {
            tracing::error!(error = ?inner, "internal error");
        }
        let code = e.code();
        let (instance, peer_code, retry_after_ms) = match &e {
            AppError::Peer {
                instance,
                peer_code,
                retry_after_ms,
                ..
            } => (Some(instance.clone()), peer_code.clone(), *retry_after_ms),
            _ => (None, None, None),
        };
        async_graphql::Error::new(e.message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(i) = &instance {
                ext.set("instance", i.as_str());
            }
            if let Some(p) = &peer_code {
                ext.set("peerCode", p.as_str());
            }
            if let Some(ms) = retry_after_ms {
                ext.set("retryAfterMs", ms);
            }
        })
    }
}

pub type AppResult<T> = Result<T, AppError>;
