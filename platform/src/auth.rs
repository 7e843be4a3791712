//! Customers' identity: JSON Web Tokens signed with Ed25519 (`alg: EdDSA`), decision 0013.
//!
//! A service that checks tokens holds only public keys ([`Verifier`]); whoever issues them
//! holds the private key ([`Signer`]): an identity provider in production, `scripts/token`
//! and the development endpoint locally. Every token must carry `sub` (the customer), `iss`,
//! `aud` and `exp`; the issuer and audience must be the configured ones, and the clock may be
//! off by [`AuthSettings::leeway_secs`] either way.
//!
//! One room (with its tests, most of its length): the verifier, its key reloads, the customer
//! rule and the signer share one key format and one set of claims, and are read together.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, spki::der::pem::LineEnding};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const DEFAULT_ISSUER: &str = "order-system";
pub const DEFAULT_AUDIENCE: &str = "order-api";

/// `<PREFIX>__AUTH__*`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AuthSettings {
    /// A PEM file of the Ed25519 public keys that tokens may be signed with: one
    /// `PUBLIC KEY` block, or several while keys are rotated. Required by the order service.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
    /// How far the issuer's clock and ours may disagree, in seconds, for `exp` and `nbf`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Development only: a PEM private key with which the service mints a token for any
    /// customer who asks (`POST /auth/token`). Never set it where real customers are.
    #[serde(default)]
    pub dev_signing_key_file: Option<PathBuf>,
    /// How long a development token lasts.
    #[serde(default = "default_dev_token_ttl_secs")]
    pub dev_token_ttl_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            public_key_file: None,
            issuer: default_issuer(),
            audience: default_audience(),
            leeway_secs: default_leeway_secs(),
            dev_signing_key_file: None,
            dev_token_ttl_secs: default_dev_token_ttl_secs(),
        }
    }
}

fn default_issuer() -> String {
    DEFAULT_ISSUER.into()
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.into()
}

fn default_leeway_secs() -> u64 {
    30
}

fn default_dev_token_ttl_secs() -> u64 {
    12 * 3600
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no PUBLIC KEY block")]
    NoPublicKey,
    #[error("{what} is not an Ed25519 key in PEM form: {source}")]
    Invalid { what: String, source: jsonwebtoken::errors::Error },
}

/// How often [`Verifier::watch`] looks at the key file's modification time.
pub const KEY_FILE_CHECK: Duration = Duration::from_secs(5);

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The keys of PEM text holding one or more `PUBLIC KEY` blocks.
fn public_keys(pem: &str) -> Result<Vec<DecodingKey>, KeyError> {
    const END: &str = "-----END PUBLIC KEY-----";
    let keys = pem
        .split_inclusive(END)
        .filter(|block| block.contains(END))
        .enumerate()
        .map(|(n, block)| {
            DecodingKey::from_ed_pem(block.trim().as_bytes())
                .map_err(|source| KeyError::Invalid { what: format!("public key {}", n + 1), source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(KeyError::NoPublicKey);
    }
    Ok(keys)
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })
}

/// Why a token was refused; [`Rejection::describe`] is safe to show the caller (RFC 6750's
/// `error_description`): it says what is wrong, never what would have been right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingClaim(String),
}

impl Rejection {
    pub fn describe(&self) -> String {
        match self {
            Self::Malformed => "the token is not a well-formed JWT".into(),
            Self::Algorithm => "the token's algorithm is not accepted (EdDSA only)".into(),
            Self::Signature => "the token's signature does not match a trusted key".into(),
            Self::Expired => "the token has expired".into(),
            Self::NotYetValid => "the token is not valid yet".into(),
            Self::Issuer => "the token was issued by an issuer this service does not trust".into(),
            Self::Audience => "the token is meant for another audience".into(),
            Self::MissingClaim(claim) => format!("the token has no valid {claim} claim"),
        }
    }
}

impl From<jsonwebtoken::errors::Error> for Rejection {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                Self::Algorithm
            }
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                Self::MissingClaim(claim.clone())
            }
            _ => Self::Malformed,
        }
    }
}

/// What a token says, as issued.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    /// What else the subject may do, space-separated (RFC 8693's `scope` claim), e.g.
    /// `orders:ship` for a fulfilment operator. Customers' tokens have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// The part of a verified token the caller needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Principal {
    #[serde(rename = "sub")]
    pub subject: String,
    #[serde(default)]
    scope: Option<String>,
}

impl Principal {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.as_deref().is_some_and(|granted| granted.split_ascii_whitespace().any(|s| s == scope))
    }
}

/// The scope of a fulfilment operator's token: it may ship any customer's order.
pub const SHIP_SCOPE: &str = "orders:ship";

/// Checks tokens against the trusted public keys.
///
/// A shopper sends the same token with every request until it expires, and checking an
/// Ed25519 signature costs more than everything else the order service does for a request
/// but the database. So a token that verified is remembered, with its expiry, and a repeat
/// costs a map lookup: still refused once it expires. Only tokens that verified are kept, at
/// most [`Verifier::REMEMBERED`] of them.
///
/// The keys are read again from their file on SIGHUP and when the file changes
/// ([`Verifier::watch`]): a key added is trusted and a key removed refused at once, without a
/// restart, and the tokens remembered so far are forgotten.
pub struct Verifier {
    keys: RwLock<Arc<Vec<DecodingKey>>>,
    /// Bumped at every reload: a token checked against the keys before it is not remembered.
    generation: AtomicU64,
    validation: Validation,
    verified: Mutex<HashMap<String, Verified>>,
    /// Where the keys come from, and the file's modification time when last read.
    source: Option<(PathBuf, Mutex<Option<SystemTime>>)>,
}

/// A token that verified: who it names, and the last second it is valid in.
struct Verified {
    principal: Principal,
    valid_until: u64,
}

/// The claims read from a token when it is checked.
struct Checked {
    principal: Principal,
    exp: u64,
}

impl Checked {
    /// Read by hand from the verified claims, so that a missing or mistyped `sub`, `exp` or
    /// `scope` is named as such (a typed decode would call the whole token malformed).
    fn from_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Result<Self, Rejection> {
        use serde_json::Value;
        let missing = |claim: &str| Rejection::MissingClaim(claim.to_owned());
        let subject = claims.get("sub").and_then(Value::as_str).ok_or_else(|| missing("sub"))?.to_owned();
        let exp = claims.get("exp").and_then(Value::as_u64).ok_or_else(|| missing("exp"))?;
        let scope = match claims.get("scope") {
            None | Some(Value::Null) => None,
            Some(Value::String(scope)) => Some(scope.clone()),
            Some(_) => return Err(missing("scope")),
        };
        Ok(Self { principal: Principal { subject, scope }, exp })
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("keys", &self.keys().len()).finish_non_exhaustive()
    }
}

impl Verifier {
    /// From the settings' public key file.
    pub fn from_settings(settings: &AuthSettings) -> anyhow::Result<Self> {
        let path = settings.public_key_file.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no public key for customers' tokens: set <PREFIX>__AUTH__PUBLIC_KEY_FILE to a PEM file of Ed25519 \
                 public keys (scripts/token keygen makes a pair for local use)"
            )
        })?;
        let modified = modified(path);
        let mut verifier = Self::from_pem(&read(path)?, &settings.issuer, &settings.audience, settings.leeway_secs)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        verifier.source = Some((path.to_owned(), Mutex::new(modified)));
        Ok(verifier)
    }

    /// From PEM text holding one or more `PUBLIC KEY` blocks.
    pub fn from_pem(pem: &str, issuer: &str, audience: &str, leeway_secs: u64) -> Result<Self, KeyError> {
        crate::jwt_crypto::install();
        let keys = public_keys(pem)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.leeway = leeway_secs;
        validation.validate_nbf = true;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            generation: AtomicU64::new(0),
            validation,
            verified: Mutex::new(HashMap::new()),
            source: None,
        })
    }

    fn keys(&self) -> Arc<Vec<DecodingKey>> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the key file again and trusts exactly the keys it holds now, forgetting every
    /// token remembered so far. A file that cannot be read or holds no valid key changes
    /// nothing (the error says why). Returns how many keys are trusted.
    pub fn reload(&self) -> Result<usize, KeyError> {
        let Some((path, seen)) = &self.source else { return Ok(self.keys().len()) };
        let modified = modified(path);
        let keys = public_keys(&read(path)?)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.verified.lock().unwrap_or_else(PoisonError::into_inner).clear();
        *seen.lock().unwrap_or_else(PoisonError::into_inner) = modified;
        Ok(count)
    }

    /// Whether the key file changed since it was last read.
    fn changed(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|(path, seen)| *seen.lock().unwrap_or_else(PoisonError::into_inner) != modified(path))
    }

    /// Reloads the keys on SIGHUP and whenever their file changes (looked at every
    /// [`KEY_FILE_CHECK`]), until `shutdown`. A reload that fails keeps the keys in use.
    /// SIGHUP is taken from the moment this is called (its default would end the process);
    /// the reloads happen while the returned task runs.
    pub fn watch(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + Send + 'static> {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup()).map_err(|e| anyhow::anyhow!("listening for SIGHUP: {e}"))?;
        Ok(self.reload_on(hangups, shutdown))
    }

    async fn reload_on(
        self: Arc<Self>,
        mut hangups: tokio::signal::unix::Signal,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut ticks = tokio::time::interval(KEY_FILE_CHECK);
        loop {
            let why = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = hangups.recv() => "SIGHUP",
                _ = ticks.tick() => {
                    if !self.changed() {
                        continue;
                    }
                    "the key file changed"
                }
            };
            match self.reload() {
                Ok(keys) => tracing::info!(why, keys, "keys for customers' tokens reloaded"),
                Err(error) => {
                    tracing::warn!(why, %error, "keys for customers' tokens not reloaded; the ones in use stay")
                }
            }
        }
    }

    /// How many verified tokens are remembered at most.
    pub const REMEMBERED: usize = 10_000;

    /// The token's subject, if the token is signed by a trusted key and valid now.
    pub fn verify(&self, token: &str) -> Result<String, Rejection> {
        self.principal(token).map(|principal| principal.subject)
    }

    /// The token's subject and scopes, if the token is signed by a trusted key and valid now.
    pub fn principal(&self, token: &str) -> Result<Principal, Rejection> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = verified.get(token) {
            if now <= known.valid_until {
                return Ok(known.principal.clone());
            }
            verified.remove(token);
            return Err(Rejection::Expired);
        }
        // Checked without holding the lock: other requests go on meanwhile.
        drop(verified);
        let generation = self.generation.load(Ordering::SeqCst);
        let checked = self.check(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            // The keys changed while it was checked: valid now, but not remembered.
            return Ok(checked.principal);
        }
        if verified.len() >= Self::REMEMBERED {
            verified.retain(|_, known| now <= known.valid_until);
            if verified.len() >= Self::REMEMBERED {
                verified.clear();
            }
        }
        let valid_until = checked.exp.saturating_add(self.validation.leeway);
        verified.insert(token.to_owned(), Verified { principal: checked.principal.clone(), valid_until });
        Ok(checked.principal)
    }

    fn check(&self, token: &str) -> Result<Checked, Rejection> {
        for key in self.keys().iter() {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &self.validation) {
                Ok(data) => return Checked::from_claims(&data.claims),
                // Signed with another key, perhaps one of the others (rotation).
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Rejection::Signature)
    }
}

/// Why a request to `realm` is not authenticated: a `401` with an RFC 6750 challenge that says
/// what was wrong with the token (never what would have been right).
#[derive(Debug, thiserror::Error)]
#[error("not authenticated for {realm}: {why}")]
pub struct Unauthenticated {
    realm: &'static str,
    why: Unauthorised,
}

#[derive(Debug, thiserror::Error)]
enum Unauthorised {
    #[error("no bearer token")]
    Missing,
    #[error("token refused: {0:?}")]
    Invalid(Rejection),
    #[error("more than one Authorization header")]
    Several,
    #[error("{0}")]
    Subject(&'static str),
    #[error("the token lacks scope {0}")]
    Scope(&'static str),
}

impl Unauthenticated {
    /// The token was valid but its subject is not one `realm` accepts (`what` says why, e.g.
    /// "the token's subject is not a valid customer id").
    pub fn subject(realm: &'static str, what: &'static str) -> Self {
        Self { realm, why: Unauthorised::Subject(what) }
    }

    /// The token was valid but does not grant `scope`: a `403` (RFC 6750's
    /// `insufficient_scope`).
    pub fn scope(realm: &'static str, scope: &'static str) -> Self {
        Self { realm, why: Unauthorised::Scope(scope) }
    }

    /// What is wrong with the token that came (RFC 6750's `error_description`); `None` when
    /// none came, or when the token is fine but grants too little (see `error_response`).
    fn description(&self) -> Option<String> {
        match &self.why {
            Unauthorised::Missing | Unauthorised::Scope(_) => None,
            Unauthorised::Invalid(rejection) => Some(rejection.describe()),
            Unauthorised::Subject(what) => Some((*what).to_owned()),
            Unauthorised::Several => Some("the request carries more than one Authorization header".to_owned()),
        }
    }
}

impl actix_web::ResponseError for Unauthenticated {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self.why {
            Unauthorised::Scope(_) => actix_web::http::StatusCode::FORBIDDEN,
            _ => actix_web::http::StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let realm = self.realm;
        let (code, message, challenge) = match (&self.why, self.description()) {
            (Unauthorised::Scope(scope), _) => (
                "insufficient_scope",
                format!("this needs a token that grants {scope} (a fulfilment operator's); yours does not"),
                format!(r#"Bearer realm="{realm}", error="insufficient_scope", scope="{scope}""#),
            ),
            (_, None) => (
                "unauthenticated",
                "sign in: send Authorization: Bearer <token>, a token naming you as its subject".to_owned(),
                format!(r#"Bearer realm="{realm}""#),
            ),
            (_, Some(description)) => (
                "unauthenticated",
                format!("{description}; sign in again for a new token"),
                format!(r#"Bearer realm="{realm}", error="invalid_token", error_description="{description}""#),
            ),
        };
        tracing::debug!(reason = %self, "request not authenticated");
        let mut response = crate::http::error_response(self.status_code(), code, message);
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(actix_web::http::header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The subject of the request's valid bearer token, checked by the [`Verifier`] registered as
/// app data (a route that needs it cannot exist without it): what a service's own extractor
/// (its customer) is built on.
pub fn bearer_subject(request: &actix_web::HttpRequest, realm: &'static str) -> Result<String, Unauthenticated> {
    bearer_principal(request, realm).map(|principal| principal.subject)
}

/// The longest customer id.
pub const MAX_CUSTOMER_ID_LEN: usize = 64;

/// Whether `id` can name a customer: 1 to [`MAX_CUSTOMER_ID_LEN`] letters, digits, `-`, `_`,
/// `.` and `@`.
pub fn is_customer_id(id: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    (1..=MAX_CUSTOMER_ID_LEN).contains(&id.len()) && id.chars().all(allowed)
}

/// The customer named by the request's valid bearer token. A token whose subject cannot be a
/// customer id is refused as such (401) by every service's customer routes alike.
pub fn bearer_customer(request: &actix_web::HttpRequest, realm: &'static str) -> Result<String, Unauthenticated> {
    let subject = bearer_subject(request, realm)?;
    if !is_customer_id(&subject) {
        return Err(Unauthenticated::subject(realm, "the token's subject is not a valid customer id"));
    }
    Ok(subject)
}

/// The subject and scopes of the request's valid bearer token (see [`bearer_subject`]).
pub fn bearer_principal(request: &actix_web::HttpRequest, realm: &'static str) -> Result<Principal, Unauthenticated> {
    let refused = |why| Unauthenticated { realm, why };
    // Which of two credentials is meant is not for a server to guess.
    if request.headers().get_all(actix_web::http::header::AUTHORIZATION).nth(1).is_some() {
        return Err(refused(Unauthorised::Several));
    }
    let token = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::admin::bearer_token)
        .ok_or(refused(Unauthorised::Missing))?;
    let verifier = request.app_data::<actix_web::web::Data<Verifier>>().ok_or(refused(Unauthorised::Missing))?;
    verifier.principal(token).map_err(|rejection| refused(Unauthorised::Invalid(rejection)))
}

/// Mints tokens: for the local stack, the tools and the tests; production tokens come from
/// the shop's identity provider.
pub struct Signer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl Signer {
    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?, issuer, audience)
            .map_err(|e| KeyError::Invalid { what: path.display().to_string(), source: e })
    }

    pub fn from_pem(pem: &str, issuer: &str, audience: &str) -> Result<Self, jsonwebtoken::errors::Error> {
        crate::jwt_crypto::install();
        Ok(Self { key: EncodingKey::from_ed_pem(pem.as_bytes())?, issuer: issuer.into(), audience: audience.into() })
    }

    /// A token for `subject`, valid from now for `ttl`.
    pub fn mint(&self, subject: &str, ttl: Duration) -> String {
        self.mint_with_scope(subject, None, ttl)
    }

    /// A token for `subject` that also grants `scope` (space-separated scopes).
    pub fn mint_with_scope(&self, subject: &str, scope: Option<&str>, ttl: Duration) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: subject.into(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now.saturating_add(ttl.as_secs()),
            nbf: now,
            iat: now,
            scope: scope.map(str::to_owned),
        };
        // Signing with a key that parsed cannot fail; if it ever did, the token would be
        // refused where it is used, with the reason.
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key).unwrap_or_default()
    }
}

/// A fresh Ed25519 key pair as PEM text: (private key in PKCS#8, public key in SPKI), the
/// forms `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write.
pub fn generate_key_pair() -> anyhow::Result<(String, String)> {
    let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let private = signing.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("encoding the private key: {e}"))?;
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
    Ok((private.to_string(), public))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Signer, String) {
        let (private, public) = generate_key_pair().expect("keys");
        (Signer::from_pem(&private, DEFAULT_ISSUER, DEFAULT_AUDIENCE).expect("signer"), public)
    }

    fn verifier(public: &str) -> Verifier {
        Verifier::from_pem(public, DEFAULT_ISSUER, DEFAULT_AUDIENCE, 30).expect("verifier")
    }

    #[test]
    fn a_rotated_key_file_is_trusted_as_it_is_now_without_a_restart() {
        let (old_signer, old_public) = pair();
        let (new_signer, new_public) = pair();
        let dir = std::env::temp_dir().join(format!("keys-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("public.pem");
        std::fs::write(&file, &old_public).expect("written");
        let settings = AuthSettings { public_key_file: Some(file.clone()), ..AuthSettings::default() };
        let verifier = Verifier::from_settings(&settings).expect("verifier");
        let (old, new) =
            (old_signer.mint("alice", Duration::from_secs(60)), new_signer.mint("bob", Duration::from_secs(60)));
        assert_eq!(verifier.verify(&old), Ok("alice".to_owned()), "remembered from now on");
        assert_eq!(verifier.verify(&new), Err(Rejection::Signature));
        assert!(!verifier.changed());

        // The old key goes, the new one comes (a rotation's last step).
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, &new_public).expect("rotated");
        let bumped = std::fs::File::options().write(true).open(&file).expect("open");
        bumped.set_modified(SystemTime::now() + Duration::from_secs(1)).expect("mtime");
        assert!(verifier.changed(), "the watcher sees the file change");
        assert_eq!(verifier.reload().expect("reloaded"), 1);
        assert_eq!(verifier.verify(&old), Err(Rejection::Signature), "refused at once, though remembered");
        assert_eq!(verifier.verify(&new), Ok("bob".to_owned()));

        // A broken file keeps the keys in use.
        std::fs::write(&file, "not a key").expect("broken");
        assert!(verifier.reload().is_err());
        assert_eq!(verifier.verify(&new), Ok("bob".to_owned()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_token_without_sub_or_exp_is_refused_for_that_claim_not_as_malformed() {
        let (signer, public) = pair();
        let verifier = verifier(&public);
        let now = jsonwebtoken::get_current_timestamp();
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signer.key).expect("signed")
        };
        let without_sub = sign(serde_json::json!({"iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "exp": now + 60}));
        assert_eq!(verifier.verify(&without_sub), Err(Rejection::MissingClaim("sub".into())));
        let without_exp = sign(serde_json::json!({"iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "alice"}));
        assert_eq!(verifier.verify(&without_exp), Err(Rejection::MissingClaim("exp".into())));
        let numeric_sub =
            sign(serde_json::json!({"iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": 7, "exp": now + 60}));
        assert_eq!(verifier.verify(&numeric_sub), Err(Rejection::MissingClaim("sub".into())));
    }

    #[test]
    fn a_signed_token_whose_subject_cannot_be_a_customer_is_refused_by_every_customer_route() {
        let (signer, public) = pair();
        let verifier = actix_web::web::Data::new(verifier(&public));
        let ask = |subject: &str| {
            let request = actix_web::test::TestRequest::default()
                .insert_header(("Authorization", format!("Bearer {}", signer.mint(subject, Duration::from_secs(60)))))
                .app_data(verifier.clone())
                .to_http_request();
            bearer_customer(&request, "notifications")
        };
        assert_eq!(ask("alice").ok().as_deref(), Some("alice"));
        for subject in ["not a customer!", "", &"x".repeat(65), "bob\u{0}"] {
            let refused = ask(subject).expect_err("refused");
            assert!(refused.to_string().contains("not a valid customer id"), "{subject:?}: {refused}");
        }
    }

    #[test]
    fn a_token_from_the_trusted_key_names_its_customer() {
        let (signer, public) = pair();
        let token = signer.mint("alice", Duration::from_secs(60));
        assert_eq!(verifier(&public).verify(&token), Ok("alice".to_owned()));
    }

    #[test]
    fn a_scope_is_granted_only_when_the_token_names_it() {
        let (signer, public) = pair();
        let verifier = verifier(&public);
        let customer = verifier.principal(&signer.mint("alice", Duration::from_secs(60))).expect("valid");
        assert!(!customer.has_scope(SHIP_SCOPE));
        let operator = signer.mint_with_scope("packer-1", Some("orders:read orders:ship"), Duration::from_secs(60));
        let operator = verifier.principal(&operator).expect("valid");
        assert_eq!(operator.subject, "packer-1");
        assert!(operator.has_scope(SHIP_SCOPE) && !operator.has_scope("orders:ship:all"));
        let near_miss = signer.mint_with_scope("p", Some("orders:shipping"), Duration::from_secs(60));
        assert!(!verifier.principal(&near_miss).expect("valid").has_scope(SHIP_SCOPE));
    }

    #[test]
    fn another_key_another_issuer_or_audience_is_refused() {
        let (signer, _) = pair();
        let (_, other_public) = pair();
        let token = signer.mint("alice", Duration::from_secs(60));
        assert_eq!(verifier(&other_public).verify(&token), Err(Rejection::Signature));

        let (private, public) = generate_key_pair().expect("keys");
        let foreign = Signer::from_pem(&private, "elsewhere", DEFAULT_AUDIENCE).expect("signer");
        assert_eq!(verifier(&public).verify(&foreign.mint("a", Duration::from_secs(60))), Err(Rejection::Issuer));
        let foreign = Signer::from_pem(&private, DEFAULT_ISSUER, "billing").expect("signer");
        assert_eq!(verifier(&public).verify(&foreign.mint("a", Duration::from_secs(60))), Err(Rejection::Audience));
    }

    #[test]
    fn during_a_rotation_either_key_is_trusted() {
        let (old, old_public) = pair();
        let (new, new_public) = pair();
        let both = verifier(&format!("{old_public}\n{new_public}"));
        for signer in [old, new] {
            assert!(both.verify(&signer.mint("bob", Duration::from_secs(60))).is_ok());
        }
    }

    #[test]
    fn an_expired_token_is_refused_beyond_the_leeway() {
        let (signer, public) = pair();
        let token = signer.mint("alice", Duration::ZERO);
        // Expired just now: inside the leeway.
        assert!(verifier(&public).verify(&token).is_ok());
        let strict = Verifier::from_pem(&public, DEFAULT_ISSUER, DEFAULT_AUDIENCE, 0).expect("verifier");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(strict.verify(&token), Err(Rejection::Expired));
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_it_expires() {
        let (signer, public) = pair();
        let strict = Verifier::from_pem(&public, DEFAULT_ISSUER, DEFAULT_AUDIENCE, 0).expect("verifier");
        let token = signer.mint_with_scope("packer-1", Some(SHIP_SCOPE), Duration::from_secs(1));
        let first = strict.principal(&token).expect("valid");
        // The second check is answered from memory, with the same scopes.
        assert_eq!(strict.principal(&token), Ok(first));
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(strict.verify(&token), Err(Rejection::Expired));
        assert_eq!(strict.verify(&token), Err(Rejection::Expired), "forgotten once expired, and checked again");
    }

    #[test]
    fn hmac_and_unsigned_tokens_are_refused() {
        let (_, public) = pair();
        let claims = Claims {
            sub: "mallory".into(),
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
            nbf: 0,
            iat: 0,
            scope: Some(SHIP_SCOPE.into()),
        };
        let encode = |json: &str| base64_url(json.as_bytes());
        let body = encode(&serde_json::to_string(&claims).expect("json"));
        // HS256 keyed with the public key's own text: the classic algorithm confusion.
        let hs256 = {
            use hmac::Mac as _;
            let signed = format!("{}.{body}", encode(r#"{"alg":"HS256","typ":"JWT"}"#));
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(public.as_bytes()).expect("hmac key");
            mac.update(signed.as_bytes());
            format!("{signed}.{}", base64_url(&mac.finalize().into_bytes()))
        };
        assert_eq!(verifier(&public).verify(&hs256), Err(Rejection::Algorithm));

        for unsigned in [format!("{}.{body}.", encode(r#"{"alg":"none","typ":"JWT"}"#)), body.clone(), String::new()] {
            assert!(verifier(&public).verify(&unsigned).is_err(), "{unsigned}");
        }
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_file_without_a_public_key_is_refused() {
        assert!(matches!(
            Verifier::from_pem("nothing here", DEFAULT_ISSUER, DEFAULT_AUDIENCE, 0),
            Err(KeyError::NoPublicKey)
        ));
    }
}
