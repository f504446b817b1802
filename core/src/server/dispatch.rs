//! The inner call: the decrypted body parsed once into typed calls ([`Inner`]), the role check, the
//! method's handler, and the audit record its row of the method table asks for.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use super::Server;
use super::wire::{batch_id, echoable_id, first_byte};
use crate::audit::Kind;
use crate::jsonrpc::{self, MethodError};
use crate::methods::{self, APP_METHOD_SPEED, AfterAnswer, AppMethod, Audit, Method, Speed, Subject};
use crate::principal::Role;
use crate::secret::{SecretBuffer, wipe_json};
use crate::state::CallContext;

/// A decrypted inner body, parsed once: what the slow/fast split, dispatch and the audit log read.
pub(crate) enum Inner {
    /// One request object (the common case).
    One(InnerCall),
    /// A batch: each element a call, or `None` for an element that is not an object.
    Batch(Vec<Option<InnerCall>>),
    /// JSON, but no request (an empty batch, a string, an object serde cannot read as one).
    NotRequest,
}

/// What an inner request calls, looked up once.
pub(crate) enum Target {
    /// The request has no `method`.
    Missing,
    /// No method has this name.
    Unknown,
    /// A row of the method table.
    Builtin(&'static Method),
    /// An embedder's method: its name and the least role it needs.
    App(Box<str>, Role),
}

/// One inner request: the id to echo, its method, its params (wiped when dropped).
pub(crate) struct InnerCall {
    id: Box<RawValue>,
    target: Target,
    params: Option<Value>,
}

impl Drop for InnerCall {
    fn drop(&mut self) {
        if let Some(params) = self.params.as_mut() {
            wipe_json(params);
        }
    }
}

/// An inner request, parsed in place from the decrypted body.
#[derive(Deserialize)]
struct InnerRequest<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(default)]
    params: Option<Value>,
}

impl Target {
    fn of(method: Option<&str>, app_methods: &HashMap<String, AppMethod>) -> Self {
        let Some(name) = method else { return Self::Missing };
        if let Some(builtin) = methods::find(name) {
            return Self::Builtin(builtin);
        }
        match app_methods.get(name) {
            Some(app) => Self::App(name.into(), app.role),
            None => Self::Unknown,
        }
    }

    /// Its speed; `None` if there is no such method.
    fn speed(&self) -> Option<Speed> {
        match self {
            Self::Builtin(method) => Some(method.speed()),
            Self::App(..) => Some(APP_METHOD_SPEED),
            Self::Missing | Self::Unknown => None,
        }
    }

    /// The least role it needs; `None` if there is no such method.
    fn role(&self) -> Option<Role> {
        match self {
            Self::Builtin(method) => Some(method.role()),
            Self::App(_, role) => Some(*role),
            Self::Missing | Self::Unknown => None,
        }
    }
}

impl InnerCall {
    fn parse(request: InnerRequest<'_>, app_methods: &HashMap<String, AppMethod>) -> Self {
        let target = Target::of(request.method.as_deref(), app_methods);
        Self { id: echoable_id(request.id).to_owned(), target, params: request.params }
    }

    /// A batch element that is an object serde cannot read as a request (a `method` that is not a
    /// string, a repeated field): read as any JSON object, as a lenient server would.
    fn from_object(
        raw: &RawValue,
        mut object: serde_json::Map<String, Value>,
        apps: &HashMap<String, AppMethod>,
    ) -> Self {
        let target = Target::of(object.get("method").and_then(Value::as_str), apps);
        let params = object.remove("params");
        let mut rest = Value::Object(object);
        wipe_json(&mut rest);
        Self { id: batch_id(raw).to_owned(), target, params }
    }
}

impl Inner {
    /// Parses a decrypted body; `None` if it is not JSON.
    pub(crate) fn parse(plaintext: &[u8], app_methods: &HashMap<String, AppMethod>) -> Option<Self> {
        match first_byte(plaintext) {
            Some(b'{') => {
                if let Ok(request) = serde_json::from_slice::<InnerRequest<'_>>(plaintext) {
                    return Some(Self::One(InnerCall::parse(request, app_methods)));
                }
            }
            Some(b'[') => {
                let elements: Vec<&RawValue> = serde_json::from_slice(plaintext).ok()?;
                if elements.is_empty() {
                    return Some(Self::NotRequest);
                }
                let calls = elements.into_iter().map(|raw| batch_element(raw, app_methods)).collect();
                return Some(Self::Batch(calls));
            }
            _ => {}
        }
        serde_json::from_slice::<IgnoredAny>(plaintext).ok().map(|_| Self::NotRequest)
    }

    /// Whether it may be slow: a [`Speed::Slow`] method the caller's `role` may call, or a batch.
    /// A single request the role does not allow is not slow: it is refused at once, without
    /// taking a place in the host's pool.
    pub(crate) fn is_slow(&self, role: Role) -> bool {
        match self {
            Self::One(call) => {
                call.target.speed() == Some(Speed::Slow) && call.target.role().is_some_and(|needs| role.allows(needs))
            }
            Self::Batch(_) => true,
            Self::NotRequest => false,
        }
    }
}

fn batch_element(raw: &RawValue, app_methods: &HashMap<String, AppMethod>) -> Option<InnerCall> {
    if first_byte(raw.get().as_bytes()) != Some(b'{') {
        return None;
    }
    if let Ok(request) = serde_json::from_str::<InnerRequest<'_>>(raw.get()) {
        return Some(InnerCall::parse(request, app_methods));
    }
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(object)) => Some(InnerCall::from_object(raw, object, app_methods)),
        _ => None,
    }
}

/// Whether the inner requests of an envelope are run or refused (a batch refuses each slow request
/// after its first).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Run {
    Dispatch,
    RefuseBusy,
}

impl Server {
    /// Answers a parsed inner body into `out`.
    pub(super) fn answer_inner(
        &self,
        inner: &mut Inner,
        context: &CallContext,
        run: Run,
        out: &mut SecretBuffer,
    ) -> AfterAnswer {
        let mut after = AfterAnswer::default();
        match inner {
            Inner::One(call) => self.answer_call(call, context, run, &mut after, out),
            Inner::Batch(calls) => {
                let mut slow_ran = false;
                out.push(b'[');
                for (i, call) in calls.iter_mut().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let Some(call) = call else {
                        let (code, message) = MethodError::InvalidRequest("not a JSON-RPC request".into()).wire();
                        jsonrpc::write_error(&Value::Null, code, &message, out);
                        continue;
                    };
                    // One slow call per batch at most: one envelope cannot queue KDFs by the thousand.
                    let slow = call.target.speed() == Some(Speed::Slow);
                    let run = match run {
                        Run::Dispatch if slow && slow_ran => Run::RefuseBusy,
                        run => run,
                    };
                    slow_ran |= slow;
                    self.answer_call(call, context, run, &mut after, out);
                }
                out.push(b']');
            }
            Inner::NotRequest => {
                let (code, message) = MethodError::InvalidRequest("not a JSON-RPC request".into()).wire();
                jsonrpc::write_error(&Value::Null, code, &message, out);
            }
        }
        after
    }

    fn answer_call(
        &self,
        call: &mut InnerCall,
        context: &CallContext,
        run: Run,
        after: &mut AfterAnswer,
        out: &mut SecretBuffer,
    ) {
        if matches!(call.target, Target::Missing) {
            let (code, message) = MethodError::InvalidRequest("no method".into()).wire();
            return jsonrpc::write_error(&*call.id, code, &message, out);
        }
        let result = match run {
            Run::Dispatch => self.dispatch(call, context, after),
            Run::RefuseBusy => Err(MethodError::Busy),
        };
        match result {
            Ok(mut value) => {
                jsonrpc::write_ok(&*call.id, &value, out);
                wipe_json(&mut value);
            }
            Err(error) => {
                let (code, message) = error.wire();
                jsonrpc::write_error(&*call.id, code, &message, out);
            }
        }
    }

    /// Checks the caller's role, runs the method, and records what its row of the table asks the
    /// audit log to keep.
    fn dispatch(
        &self,
        call: &mut InnerCall,
        context: &CallContext,
        after: &mut AfterAnswer,
    ) -> Result<Value, MethodError> {
        let (name, needs, audit, subject) = match &call.target {
            Target::Builtin(method) => (method.name(), method.role(), method.audit(), method.subject()),
            Target::App(name, role) => (&**name, *role, Audit::Always, Subject::Token),
            Target::Missing | Target::Unknown => return Err(MethodError::MethodNotFound),
        };
        // The wallet (or client) a call names, read before the handler takes (and wipes) the params.
        let named = match (&call.target, subject) {
            (Target::Builtin(method), Subject::Wallet(param) | Subject::Client(param)) => {
                call.params.as_ref().and_then(|params| named_param(params, method.params(), param))
            }
            _ => None,
        };
        let result = match context.role {
            None => Err(MethodError::Revoked),
            Some(role) if !role.allows(needs) => Err(MethodError::Forbidden { method: name.to_owned(), needs }),
            Some(_) => match &call.target {
                Target::Builtin(method) => method.call(&self.state, call.params.as_mut(), context, after),
                Target::App(name, _) => match self.app_methods.get(&**name) {
                    Some(app) => app.call(&self.state, call.params.as_mut(), context, after),
                    None => Err(MethodError::MethodNotFound),
                },
                Target::Missing | Target::Unknown => Err(MethodError::MethodNotFound),
            },
        };
        // (Read and reset: `after` is shared by the requests of a batch.)
        let nothing_to_audit = std::mem::take(&mut after.nothing_to_audit);
        let token_wallet = after.wallet.take();
        let refused = result.as_ref().err().is_some_and(MethodError::is_refusal);
        if (audit == Audit::Always && !nothing_to_audit) || refused {
            // A refusal that needed no work (forbidden, revoked) names nothing: the name is the
            // client's own text, and a run of such refusals is then one record with a count.
            let cheap_refusal = matches!(result, Err(MethodError::Forbidden { .. } | MethodError::Revoked));
            // (wallet, target): a client administration call names the client it acted on as its
            // target, never as a wallet.
            let (wallet, target) = match subject {
                _ if cheap_refusal => (None, None),
                Subject::Token => (token_wallet.as_deref().map(crate::methods::audit_name), None),
                Subject::Wallet(_) if !context.dir.is_empty() => {
                    (named.map(|name| format!("{}/{name}", context.dir)), None)
                }
                Subject::Wallet(_) => (named, None),
                Subject::Client(_) => (None, named),
                Subject::None => (None, None),
            };
            let outcome = result.as_ref().map_or_else(MethodError::audit_outcome, |_| "ok");
            // An owner's success that ran a KDF or wrote to the store is notable (the owner's own
            // work, each call kept as itself); a refusal, a fast call, or any other principal's call
            // is what a client can repeat by the thousand: coalesced and budgeted.
            let kind = match (&result, &call.target, context.role) {
                (Ok(_), Target::Builtin(method), Some(Role::Owner)) if method.speed() == Speed::Slow => Kind::Notable,
                _ => Kind::Cheap,
            };
            // The method's frames, now below this one, held its secrets (an unlocked master key, a
            // password). Wipe them before the audit queue allocates: a new map node or a moved
            // value's unused bytes (an `Option`'s `None`) can be copied from stale stack into the
            // heap, where no scrub reaches (the residency test found a master key so).
            crate::secret::scrub_stack_before_audit();
            let event = crate::audit::AuditEvent::new(context.principal.name(), name, wallet, outcome);
            self.state.audit(event.with_target(target), kind);
        }
        result
    }
}

/// The text of param `param` of a call whose params are named `names` (by name, or positionally),
/// as the audit log records it: at most 128 characters.
fn named_param(params: &Value, names: &[&str], param: &str) -> Option<String> {
    let value = match params {
        Value::Object(map) => map.get(param),
        Value::Array(items) => names.iter().position(|name| *name == param).and_then(|i| items.get(i)),
        _ => None,
    }?;
    value.as_str().map(|text| text.chars().take(128).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Option<Inner> {
        Inner::parse(text.as_bytes(), &HashMap::new())
    }

    #[test]
    fn a_body_is_parsed_once_into_what_it_calls() {
        let Some(Inner::One(call)) = parse(r#"{"id":7,"method":"get_mnemonic","params":{"name":"w"}}"#) else {
            panic!("one request")
        };
        assert!(matches!(call.target, Target::Builtin(m) if m.name() == "get_mnemonic"));
        assert_eq!(call.id.get(), "7");
        assert!(parse(r#"{"id":7,"method":"get_mnemonic"}"#).expect("JSON").is_slow(Role::Owner));
        // A role that may not call it: answered at once, not set aside.
        assert!(!parse(r#"{"id":7,"method":"get_mnemonic"}"#).expect("JSON").is_slow(Role::Reader));
        assert!(!parse(r#"{"id":7,"method":"accounts"}"#).expect("JSON").is_slow(Role::Owner));
        assert!(matches!(parse(r#"{"method":"nope"}"#), Some(Inner::One(InnerCall { target: Target::Unknown, .. }))));
        assert!(matches!(parse(r#"{"id":1}"#), Some(Inner::One(InnerCall { target: Target::Missing, .. }))));
        // A batch is always set aside; each element parsed, a non-object marked.
        let Some(batch @ Inner::Batch(_)) = parse(r#"[{"id":1,"method":"accounts"}, 5, {"method":3,"id":"x"}]"#) else {
            panic!("a batch")
        };
        assert!(batch.is_slow(Role::Reader));
        let Inner::Batch(calls) = batch else { unreachable!() };
        assert!(calls[1].is_none());
        let lenient = calls[2].as_ref().expect("an object");
        assert!(matches!(lenient.target, Target::Missing));
        assert_eq!(lenient.id.get(), "\"x\"");
        assert!(matches!(parse("[]"), Some(Inner::NotRequest)));
        assert!(matches!(parse("\"text\""), Some(Inner::NotRequest)));
        assert!(matches!(parse(r#"{"method":1}"#), Some(Inner::NotRequest)));
        assert!(parse("{not json").is_none());
        assert!(parse("[1,").is_none());
    }

    #[test]
    fn the_audited_name_is_found_by_name_or_position_and_cut_to_128_characters() {
        let names = &["token", "name", "other"];
        assert_eq!(named_param(&json!({"name": "w", "token": 1}), names, "name"), Some("w".into()));
        assert_eq!(named_param(&json!([1, "w", 2]), names, "name"), Some("w".into()));
        assert_eq!(named_param(&json!([1]), names, "name"), None);
        assert_eq!(named_param(&json!({"name": 5}), names, "name"), None);
        assert_eq!(named_param(&json!("w"), names, "name"), None);
        let long = "é".repeat(300);
        assert_eq!(named_param(&json!({"name": long}), names, "name").expect("a name").chars().count(), 128);
    }
}
