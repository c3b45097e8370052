//! Bearer-token authentication (docs/compatibility.md §5): RS256/ES256 JWTs from the user-service, checked
//! for signature, `exp`/`nbf` (30 s skew), issuer allow-list and audience; scopes from
//! `scope`, `scp` or `scopes`.
//!
//! Only asymmetric algorithms are accepted: with HMAC a public key would double as the
//! signing secret, and `alg: none` is not even parsed by `jsonwebtoken`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use warp::Filter;

use crate::error::ApiError;

mod jwks;
use jwks::JwksCache;

/// Allowed clock difference between the issuer and this server.
pub const LEEWAY_SECONDS: u64 = 30;
/// How long one JWKS fetch may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// At most one refetch per this interval, so that tokens with made-up `kid`s cannot turn
/// this server into a load generator against the user-service.
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(5);
/// A JWKS is a few kilobytes; anything much larger is not one.
const JWKS_MAX_BYTES: usize = 1 << 20;

pub const READ_SCOPE: &str = "order:read";
pub const WRITE_SCOPE: &str = "order:write";

/// Who is calling and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: Option<String>,
    scopes: HashSet<String>,
    /// Auth disabled: every scope is granted.
    everything: bool,
}

impl Principal {
    pub fn anonymous_with_all_scopes() -> Self {
        Self {
            subject: None,
            scopes: HashSet::new(),
            everything: true,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.everything || self.scopes.contains(scope)
    }
}

/// Start-up failures of the key configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "no token key source: set --jwks-url (ORDER_JWKS_URL) or --jwt-public-key-file \
         (ORDER_JWT_PUBLIC_KEY_FILE), or run without authentication with --auth-disabled \
         (ORDER_AUTH_DISABLED=true)"
    )]
    NoKeySource,
    #[error("no accepted issuer: set --jwt-issuers (ORDER_JWT_ISSUERS, comma-separated)")]
    NoIssuers,
    #[error("cannot read the JWT public key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the JWT public key file {0} holds neither an RSA nor an EC public key in PEM")]
    KeyFormat(String),
    #[error("invalid JWKS URL {0:?}: expected an https:// (or http://) URL with a host")]
    JwksUrl(String),
    #[error("cannot set up TLS for the JWKS fetch: {0}")]
    JwksTls(String),
}

/// One verification key and the algorithm it is used with.
#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

enum KeySource {
    Static(Vec<VerifyKey>),
    Jwks(Box<JwksCache>),
}

/// Verifies tokens; `None` inside [`Auth`] means authentication is disabled.
pub struct Verifier {
    keys: KeySource,
    /// The checks per algorithm, built once.
    rs256: Validation,
    es256: Validation,
}

fn validation(algorithm: Algorithm, issuers: &[String], audience: &str) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_audience(&[audience]);
    validation.set_issuer(issuers);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation
}

/// The authentication mode of the server.
pub enum Auth {
    Disabled,
    Enabled(Box<Verifier>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

impl ScopeClaim {
    fn into_scopes(self) -> Vec<String> {
        match self {
            ScopeClaim::Text(text) => text.split_whitespace().map(str::to_owned).collect(),
            ScopeClaim::List(list) => list,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    scp: Option<ScopeClaim>,
    #[serde(default)]
    scopes: Option<ScopeClaim>,
}

impl Auth {
    /// Builds the configured mode, refusing an enabled mode without keys or issuers.
    pub async fn from_config(config: &crate::config::Config) -> Result<Self, AuthConfigError> {
        if config.auth_disabled {
            tracing::warn!("authentication is DISABLED (--auth-disabled): every route is open");
            return Ok(Auth::Disabled);
        }
        let issuers: Vec<String> = config
            .jwt_issuers
            .iter()
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect();
        if issuers.is_empty() {
            return Err(AuthConfigError::NoIssuers);
        }
        let keys = if let Some(path) = &config.jwt_public_key_file {
            KeySource::Static(vec![load_pem(path)?])
        } else if let Some(url) = &config.jwks_url {
            let cache = JwksCache::new(url)?;
            // A first fetch warms the cache; if the user-service is down now, keys are fetched
            // on the first request instead, so the API can start before its dependency.
            if let Err(e) = cache.refresh().await {
                tracing::warn!(error = %e, url = %url, "initial JWKS fetch failed; will retry on demand");
            }
            KeySource::Jwks(Box::new(cache))
        } else {
            return Err(AuthConfigError::NoKeySource);
        };
        Ok(Auth::Enabled(Box::new(Verifier {
            keys,
            rs256: validation(Algorithm::RS256, &issuers, &config.jwt_audience),
            es256: validation(Algorithm::ES256, &issuers, &config.jwt_audience),
        })))
    }

    /// The principal a request's `Authorization` header proves.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        match self {
            Auth::Disabled => Ok(Principal::anonymous_with_all_scopes()),
            Auth::Enabled(verifier) => {
                let header = header
                    .ok_or_else(|| ApiError::Unauthenticated("no Authorization header".into()))?;
                let token = header
                    .strip_prefix("Bearer ")
                    .or_else(|| header.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ApiError::Unauthenticated("not a Bearer token".into()))?;
                verifier.verify(token).await
            }
        }
    }
}

impl Verifier {
    async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let unauthenticated = |reason: String| ApiError::Unauthenticated(reason);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("malformed token header: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(unauthenticated(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let key = match &self.keys {
            KeySource::Static(keys) => keys
                .iter()
                .find(|k| {
                    k.algorithm == header.alg
                        && (k.kid.is_none() || header.kid.is_none() || k.kid == header.kid)
                })
                .cloned(),
            KeySource::Jwks(cache) => cache.key_for(header.kid.as_deref(), header.alg).await,
        }
        .ok_or_else(|| {
            unauthenticated(format!(
                "no key for kid {:?} and algorithm {:?}",
                header.kid, header.alg
            ))
        })?;

        let validation = if key.algorithm == Algorithm::ES256 {
            &self.es256
        } else {
            &self.rs256
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|e| unauthenticated(format!("token rejected: {e}")))?;
        let claims = data.claims;
        let scopes = [claims.scope, claims.scp, claims.scopes]
            .into_iter()
            .flatten()
            .flat_map(ScopeClaim::into_scopes)
            .collect();
        Ok(Principal {
            subject: claims.sub,
            scopes,
            everything: false,
        })
    }
}

fn load_pem(path: &Path) -> Result<VerifyKey, AuthConfigError> {
    let pem = std::fs::read(path).map_err(|source| AuthConfigError::KeyFile {
        path: path.display().to_string(),
        source,
    })?;
    let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, key)
    } else {
        return Err(AuthConfigError::KeyFormat(path.display().to_string()));
    };
    Ok(VerifyKey {
        kid: None,
        algorithm,
        key,
    })
}

/// Authenticates the request and requires `scope`: 401 without a valid token, 403 without
/// the scope.
pub fn require(
    auth: Arc<Auth>,
    scope: &'static str,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    authenticate(auth)
        .and_then(move |principal: Principal| async move {
            if principal.has_scope(scope) {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError::Forbidden(scope)))
            }
        })
        .untuple_one()
}

/// Authenticates the request (401 without a valid token) and extracts who it is.
pub fn authenticate(
    auth: Arc<Auth>,
) -> impl Filter<Extract = (Principal,), Error = warp::Rejection> + Clone {
    warp::header::headers_cloned().and_then(move |headers: warp::http::HeaderMap| {
        let auth = auth.clone();
        async move {
            let header = headers
                .get(warp::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            auth.authenticate(header)
                .await
                .map_err(warp::reject::custom)
        }
    })
}
