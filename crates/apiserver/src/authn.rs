//! Authentication: who sent a request. In order: the client certificate of the TLS connection
//! (CN = user, O = groups), then a bearer token — the static token file, the bootstrap token
//! (`DATA_DIR/node-token`, group `system:bootstrappers`: it may only ask for a node
//! certificate, read from the file at each use: see `bootstrap`), or a ServiceAccount token
//! this server issued (`serviceaccounts/NAME/token`).
//! A request with none of these is anonymous; one with a token that matches nothing is refused.

use crate::State;
use api::rbac::{User, BOOTSTRAPPERS, SERVICE_ACCOUNT_PREFIX};
use api::ApiError;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// The user a bootstrap token authenticates as.
pub const BOOTSTRAP_USER: &str = "system:bootstrap:node-token";

/// Longest and default lifetime of a ServiceAccount token from the TokenRequest API.
const MAX_TOKEN_SECONDS: i64 = 48 * 3600;
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// Shortest lifetime Kubernetes grants (it answers 400 below it).
const MIN_TOKEN_SECONDS: i64 = 600;

/// The issuer of ServiceAccount tokens, and the API's audience unless `--api-audiences` says
/// otherwise (as upstream, whose default API audience is the issuer).
pub const ISSUER: &str = "https://axle.local";

/// Bearer tokens the server knows, and the key its ServiceAccount tokens are signed with.
pub struct Tokens {
    static_tokens: HashMap<String, User>,
    /// Where the bootstrap token is (`DATA_DIR`).
    data_dir: std::path::PathBuf,
    service_account_key: ring::hmac::Key,
    /// A ServiceAccount token is accepted by the API only when it is meant for one of these.
    api_audiences: Vec<String>,
}

impl Tokens {
    pub fn new(
        static_tokens: HashMap<String, User>,
        data_dir: &Path,
        service_account_key: &[u8],
        api_audiences: Vec<String>,
    ) -> Tokens {
        let api_audiences = if api_audiences.is_empty() { vec![ISSUER.to_string()] } else { api_audiences };
        Tokens {
            static_tokens,
            data_dir: data_dir.to_path_buf(),
            service_account_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, service_account_key),
            api_audiences,
        }
    }

    /// The audiences a TokenRequest without any gets: the API's.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// The user a bearer token names, or 401 for a token that matches nothing (expired,
    /// revoked, forged).
    fn user(&self, state: &State, token: &str) -> Result<User, ApiError> {
        if let Some(user) = self.static_tokens.get(token) {
            return Ok(user.clone());
        }
        if crate::bootstrap::current_token(&self.data_dir).is_some_and(|bootstrap| bootstrap == token) {
            return Ok(User::new(BOOTSTRAP_USER, [BOOTSTRAPPERS]));
        }
        self.service_account_user(state, token).ok_or_else(ApiError::unauthorized)
    }

    /// A signed JWT (HS256) naming a ServiceAccount, valid for `seconds` (clamped to what
    /// Kubernetes allows) while the ServiceAccount with `uid` exists.
    pub fn issue_service_account_token(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        seconds: Option<i64>,
    ) -> Result<(String, i64), ApiError> {
        let seconds = seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
        if seconds < MIN_TOKEN_SECONDS {
            return Err(ApiError::bad_request(format!(
                "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than {MIN_TOKEN_SECONDS} seconds"
            )));
        }
        let now = unix_now();
        let expires = now + seconds.min(MAX_TOKEN_SECONDS);
        let audiences: Vec<String> = if audiences.is_empty() { self.api_audiences.clone() } else { audiences.to_vec() };
        let claims = json!({
            "iss": ISSUER, "aud": audiences, "sub": format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"),
            "iat": now, "nbf": now, "exp": expires,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let signed_part = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
        let signature = ring::hmac::sign(&self.service_account_key, signed_part.as_bytes());
        Ok((format!("{signed_part}.{}", b64(signature.as_ref())), expires))
    }

    fn service_account_user(&self, state: &State, token: &str) -> Option<User> {
        let (signed_part, signature) = token.rsplit_once('.')?;
        let decode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok();
        ring::hmac::verify(&self.service_account_key, signed_part.as_bytes(), &decode(signature)?).ok()?;
        let claims: Value = serde_json::from_slice(&decode(signed_part.split_once('.')?.1)?).ok()?;
        let (now, expires) = (unix_now(), claims["exp"].as_i64()?);
        if now >= expires || claims["nbf"].as_i64().is_some_and(|nbf| now < nbf) {
            return None;
        }
        // A token minted for another service (a vault, a cloud backend) is not a key to the API.
        let audiences: Vec<&str> = match &claims["aud"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| self.api_audiences.iter().any(|ours| ours == a)) {
            tracing::debug!(?audiences, "refused a ServiceAccount token meant for another audience");
            return None;
        }
        // Bound to the ServiceAccount object: deleting it (or recreating it) revokes the token.
        let account = &claims["kubernetes.io"];
        let (namespace, name) = (account["namespace"].as_str()?, account["serviceaccount"]["name"].as_str()?);
        let stored = state.store.get(&store::key("core/serviceaccounts", namespace, name)).ok()??;
        if api::meta::uid_of(&stored) != account["serviceaccount"]["uid"].as_str()? {
            return None;
        }
        Some(User::new(
            format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"),
            ["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{namespace}")],
        ))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Who sent the request: the TLS client certificate's subject, else the bearer token's user,
/// else anonymous. A bearer token that matches nothing is a 401, not anonymous.
pub fn authenticate(
    state: &State,
    tokens: &Tokens,
    peer: Option<&pki::Subject>,
    headers: &hyper::HeaderMap,
) -> Result<User, ApiError> {
    if let Some(subject) = peer {
        return Ok(User::new(subject.common_name.clone(), subject.organizations.clone()));
    }
    let bearer = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match bearer {
        Some(token) if !token.is_empty() => tokens.user(state, token),
        _ => Ok(User::anonymous()),
    }
}

/// Reads a Kubernetes static token file: CSV lines `token,user,uid,"group1,group2"`.
pub fn read_token_file(path: &Path) -> anyhow::Result<HashMap<String, User>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
    let mut tokens = HashMap::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line);
        let (Some(token), Some(user)) = (fields.first(), fields.get(1)) else {
            anyhow::bail!("{} line {number}: expected token,user,uid[,\"groups\"]", path.display());
        };
        if token.is_empty() || user.is_empty() {
            anyhow::bail!("{} line {number}: the token and the user must not be empty", path.display());
        }
        let groups: Vec<String> = fields
            .get(3)
            .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        tokens.insert(token.clone(), User::new(user.clone(), groups));
    }
    Ok(tokens)
}

/// Splits one CSV line; a field in double quotes may hold commas.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields.into_iter().map(|f| f.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_reads_users_and_quoted_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "# comment\nsecret1,ota,1001,\"axle:update-services,fleet\"\nsecret2,kiosk,1002\n")
            .expect("write");
        let tokens = read_token_file(&path).expect("parsed");
        let ota = &tokens["secret1"];
        assert_eq!(ota.name, "ota");
        assert!(ota.in_group("axle:update-services") && ota.in_group("fleet") && ota.in_group("system:authenticated"));
        assert_eq!(tokens["secret2"].name, "kiosk");
        std::fs::write(&path, "onlytoken\n").expect("write");
        let error = read_token_file(&path).expect_err("a line without user");
        assert!(error.to_string().contains("line 1"), "{error}");
    }
}
