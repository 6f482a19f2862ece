//! HTTP plumbing: IAM token exchange, Key Protect requests, error envelopes.

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// A string that is never shown by `Debug` (API keys, bearer tokens, key material).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret text; use only to put it on the wire or feed it to a decoder.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A Key Protect server rejected a request. The `Display` text carries the error message, the
/// reason codes and the correlation id.
#[derive(Debug)]
pub struct ApiError {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub error_msg: Option<String>,
    /// `(code, message, target name)` per reason.
    pub reasons: Vec<(String, Option<String>, Option<String>)>,
    /// Body text when the body was not a Key Protect error envelope (truncated).
    pub raw: Option<String>,
    pub correlation_id: String,
}

impl ApiError {
    pub fn codes(&self) -> Vec<&str> {
        self.reasons.iter().map(|(c, _, _)| c.as_str()).collect()
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.reasons.iter().any(|(c, _, _)| c == code)
    }

    fn from_body(
        method: Method,
        path: String,
        status: StatusCode,
        body: &[u8],
        correlation_id: String,
    ) -> Self {
        let mut err = ApiError {
            method,
            path,
            status,
            error_msg: None,
            reasons: Vec::new(),
            raw: None,
            correlation_id,
        };
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let res0 = parsed
            .as_ref()
            .and_then(|v| v.get("resources"))
            .and_then(|r| r.get(0));
        if let Some(r) = res0.filter(|r| r.get("errorMsg").is_some()) {
            err.error_msg = r.get("errorMsg").and_then(Value::as_str).map(str::to_owned);
            if let Some(reasons) = r.get("reasons").and_then(Value::as_array) {
                for reason in reasons {
                    let code = reason
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("UNKNOWN")
                        .to_owned();
                    let msg = reason
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let target = reason
                        .get("target")
                        .and_then(|t| t.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    err.reasons.push((code, msg, target));
                }
            }
        } else if let Some(v) = parsed.as_ref().filter(|v| v.get("errorMessage").is_some()) {
            // IAM's error shape: {"errorCode":"BXNIM0415E","errorMessage":"..."}
            err.error_msg = v
                .get("errorMessage")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(code) = v.get("errorCode").and_then(Value::as_str) {
                err.reasons.push((code.to_owned(), None, None));
            }
        } else if !body.is_empty() {
            let text = String::from_utf8_lossy(body);
            let mut t: String = text.chars().take(300).collect();
            if text.chars().count() > 300 {
                t.push('…');
            }
            err.raw = Some(t);
        }
        err
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed: HTTP {}",
            self.method, self.path, self.status
        )?;
        let codes = self.codes();
        if !codes.is_empty() {
            write!(f, " [{}]", codes.join(", "))?;
        }
        if let Some(m) = &self.error_msg {
            write!(f, "\n  errorMsg: {m}")?;
        }
        for (code, msg, target) in &self.reasons {
            write!(f, "\n  reason:   {code}")?;
            if let Some(m) = msg {
                write!(f, ": {m}")?;
            }
            if let Some(t) = target {
                write!(f, " (field `{t}`)")?;
            }
        }
        if let Some(raw) = &self.raw {
            write!(f, "\n  body:     {raw}")?;
        }
        write!(f, "\n  correlation-id: {}", self.correlation_id)
    }
}

impl std::error::Error for ApiError {}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Exchanged for an access token at `{iam_url}/identity/token` on first use.
    ApiKey { apikey: Secret, iam_url: Url },
    /// Used as is (a leading `Bearer ` is added when missing).
    Token(Secret),
}

/// An authenticated Key Protect client for one instance.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    instance: String,
    credentials: Credentials,
    bearer: Option<Secret>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Appends path segments (each percent-encoded, so an id cannot add segments) to `base`.
pub fn join(base: &Url, segments: &[&str]) -> anyhow::Result<Url> {
    let mut url = base.clone();
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|_| anyhow!("{base} cannot be used as a base URL"))?;
        segs.pop_if_empty();
        segs.extend(segments);
    }
    Ok(url)
}

/// A transport error with its causes (reqwest's own text is often just "error sending request"),
/// without the URL (the caller names the path).
fn transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// Parses a base URL given by the user.
pub fn parse_base(s: &str, what: &str) -> anyhow::Result<Url> {
    let url = Url::parse(s.trim()).with_context(|| format!("{what} is not a valid URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("{what} must be an http:// or https:// URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("{what} must not have a query or fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("{what} must not carry credentials");
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// A successful response: status and parsed JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Value,
}

impl Client {
    /// The instance id this client sends in `Bluemix-Instance`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// `roots`: when given, the only CA certificates trusted for HTTPS.
    pub fn new(
        base: Url,
        instance: String,
        credentials: Credentials,
        roots: Option<Vec<reqwest::Certificate>>,
    ) -> anyhow::Result<Self> {
        for url in std::iter::once(&base).chain(match &credentials {
            Credentials::ApiKey { iam_url, .. } => Some(iam_url),
            Credentials::Token(_) => None,
        }) {
            if url.scheme() == "http" && !is_loopback(url) {
                eprintln!(
                    "warning: sending credentials over plain HTTP to {}",
                    url.host_str().unwrap_or("?")
                );
            }
        }
        let mut builder = reqwest::Client::builder();
        if let Some(roots) = roots {
            builder = builder.tls_certs_only(roots);
        }
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("keyward-kp/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            instance,
            credentials,
            bearer: None,
        })
    }

    async fn bearer(&mut self) -> anyhow::Result<Secret> {
        if let Some(b) = &self.bearer {
            return Ok(b.clone());
        }
        let bearer = match &self.credentials {
            Credentials::Token(t) => {
                let t = t.expose().trim();
                if t.len() > 7 && t[..7].eq_ignore_ascii_case("bearer ") {
                    Secret::new(t)
                } else {
                    Secret::new(format!("Bearer {t}"))
                }
            }
            Credentials::ApiKey { apikey, iam_url } => {
                let url = join(iam_url, &["identity", "token"])?;
                let resp = self
                    .http
                    .post(url.clone())
                    .header(ACCEPT, "application/json")
                    .form(&[
                        ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                        ("apikey", apikey.expose()),
                    ])
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "IAM token request to {} failed: {}",
                            url.path(),
                            transport(e)
                        )
                    })?;
                let status = resp.status();
                let body = resp.bytes().await.context("reading the IAM response")?;
                if !status.is_success() {
                    let err = ApiError::from_body(
                        Method::POST,
                        url.path().to_owned(),
                        status,
                        &body,
                        "-".to_owned(),
                    );
                    return Err(anyhow::Error::new(err).context("getting an IAM access token"));
                }
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|_| anyhow!("the IAM token response is not JSON"))?;
                let token = v
                    .get("access_token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| anyhow!("the IAM token response has no access_token"))?;
                Secret::new(format!("Bearer {token}"))
            }
        };
        self.bearer = Some(bearer.clone());
        Ok(bearer)
    }

    /// Sends `method` to `/api/v2/{segments...}`. Non-2xx statuses become an [`ApiError`].
    pub async fn call(
        &mut self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        extra_headers: &[(&'static str, &str)],
        body: Option<(&'static str, &Value)>,
    ) -> anyhow::Result<Response> {
        let mut all = vec!["api", "v2"];
        all.extend_from_slice(segments);
        let mut url = join(&self.base, &all)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let bearer = self.bearer().await?;
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(bearer.expose())
            .map_err(|_| anyhow!("the bearer token contains characters not allowed in a header"))?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            "bluemix-instance",
            HeaderValue::from_str(&self.instance).context("instance id")?,
        );
        headers.insert(
            "correlation-id",
            HeaderValue::from_str(&correlation_id).context("correlation id")?,
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (k, v) in extra_headers {
            let value = HeaderValue::from_str(v).map_err(|_| {
                anyhow!("the value of header {k} contains characters not allowed in a header")
            })?;
            headers.insert(*k, value);
        }
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .headers(headers);
        if let Some((content_type, v)) = body {
            let bytes = serde_json::to_vec(v).context("encoding the request body")?;
            req = req.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "{method} {} failed: {} (correlation-id {correlation_id})",
                url.path(),
                transport(e)
            )
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the response to {method} {}", url.path()))?;
        if !status.is_success() {
            return Err(ApiError::from_body(
                method,
                url.path().to_owned(),
                status,
                &bytes,
                correlation_id,
            )
            .into());
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                anyhow!(
                    "{method} {} returned HTTP {status} with a body that is not JSON",
                    url.path()
                )
            })?
        };
        Ok(Response { status, body })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn join_escapes_segments() {
        let base = parse_base("http://127.0.0.1:8080/", "--url").unwrap();
        let u = join(&base, &["api", "v2", "keys", "a/b?c"]).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/api/v2/keys/a%2Fb%3Fc");
        let base = parse_base("https://kp.example/prefix", "--url").unwrap();
        let u = join(&base, &["api", "v2", "import_token"]).unwrap();
        assert_eq!(u.as_str(), "https://kp.example/prefix/api/v2/import_token");
        let base = parse_base("https://kp.example/prefix/", "--url").unwrap();
        let u = join(&base, &["identity", "token"]).unwrap();
        assert_eq!(u.as_str(), "https://kp.example/prefix/identity/token");
    }

    #[test]
    fn parse_base_rejects() {
        assert!(parse_base("ftp://x", "--url").is_err());
        assert!(parse_base("http://u:p@x", "--url").is_err());
        assert!(parse_base("http://x/?a=b", "--url").is_err());
        assert!(parse_base("not a url", "--url").is_err());
    }

    #[test]
    fn secret_debug_redacted() {
        let s: Secret = "kw_supersecret".parse().unwrap();
        assert!(!format!("{s:?}").contains("supersecret"));
        let c = Credentials::ApiKey {
            apikey: s.clone(),
            iam_url: parse_base("http://127.0.0.1:1", "x").unwrap(),
        };
        assert!(!format!("{c:?}").contains("supersecret"));
        assert!(!format!("{:?}", Credentials::Token(s)).contains("supersecret"));
    }

    #[test]
    fn error_envelope_is_rendered() {
        let body = br#"{"metadata":{"collectionType":"application/vnd.ibm.kms.error+json","collectionTotal":1},
          "resources":[{"errorMsg":"Bad Request: Key could not be created: Please see `reasons` for more details (INVALID_FIELD_ERR)",
          "reasons":[{"code":"INVALID_FIELD_ERR","message":"The field `payload` must be: 16, 24 or 32 bytes","status":400,
          "target":{"type":"field","name":"payload"}}]}]}"#;
        let e = ApiError::from_body(
            Method::POST,
            "/api/v2/keys".into(),
            StatusCode::BAD_REQUEST,
            body,
            "cid".into(),
        );
        assert!(e.has_code("INVALID_FIELD_ERR"));
        let s = e.to_string();
        assert!(
            s.contains("HTTP 400 Bad Request [INVALID_FIELD_ERR]"),
            "{s}"
        );
        assert!(
            s.contains("errorMsg: Bad Request: Key could not be created"),
            "{s}"
        );
        assert!(s.contains("(field `payload`)"), "{s}");
        assert!(s.contains("correlation-id: cid"), "{s}");
    }

    #[test]
    fn error_without_reasons_and_non_json() {
        let e = ApiError::from_body(
            Method::GET,
            "/api/v2/keys".into(),
            StatusCode::UNAUTHORIZED,
            br#"{"resources":[{"errorMsg":"Unauthorized: The user does not have access"}]}"#,
            "c".into(),
        );
        assert!(e.codes().is_empty());
        assert!(e.to_string().contains("Unauthorized: The user"));
        let e = ApiError::from_body(
            Method::GET,
            "/x".into(),
            StatusCode::BAD_GATEWAY,
            b"<html>bad gateway</html>",
            "c".into(),
        );
        assert!(e.to_string().contains("body:     <html>bad gateway</html>"));
        let e = ApiError::from_body(
            Method::POST,
            "/identity/token".into(),
            StatusCode::BAD_REQUEST,
            br#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found"}"#,
            "-".into(),
        );
        assert!(e.has_code("BXNIM0415E"));
    }
}
