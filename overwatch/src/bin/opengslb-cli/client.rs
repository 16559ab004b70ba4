//! Talking to the API: one request, its JSON answer, or one line saying what went wrong
//! (unreachable, not JSON, not what this CLI expects, or the API's own error message).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use opengslb_overwatch::api::types::ErrorBody;

/// The API at one base URL.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for `base` (`http://host:port`) with a per-request `timeout`.
    pub(crate) fn new(base: &str, timeout: std::time::Duration) -> Result<Client, String> {
        opengslb_overwatch::crypto::install_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// `GET path?query`: the JSON answer.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.exchange(self.http.get(&url).query(query), &url).await
    }

    /// A change: `method path` with `body`, authorized by `token`.
    pub(crate) async fn change(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
        token: &str,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.exchange(request, &url).await
    }

    async fn exchange(&self, request: reqwest::RequestBuilder, url: &str) -> Result<Value, String> {
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the API at {}: {}", self.base, cause(&e)))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("{url}: the answer is not JSON: {e}"))?;
        if !status.is_success() {
            let message = serde_json::from_value::<ErrorBody>(body)
                .map_or_else(|_| "no message".to_owned(), |e| e.error);
            return Err(format!("{url}: {status}: {message}"));
        }
        Ok(body)
    }
}

/// The answer as the API type `T`; an answer of another shape (another server version)
/// is an error that says so.
pub(crate) fn typed<T: DeserializeOwned>(body: Value, what: &str) -> Result<T, String> {
    serde_json::from_value(body)
        .map_err(|e| format!("the {what} answer is not what this opengslb-cli expects: {e}"))
}

/// The innermost cause, which says what actually went wrong (refused, timed out, DNS).
fn cause(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text = inner.to_string();
        source = inner.source();
    }
    text
}

/// A URL path segment: everything but unreserved characters percent-encoded.
pub(crate) fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
