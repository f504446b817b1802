//! `keyward native-host`: how a browser extension reaches keyward. Browsers cannot present client
//! certificates from JavaScript, so an extension talks to a native-messaging host the browser
//! starts (spec/native-messaging.md): frames of a 32-bit native-endian length and UTF-8 JSON on
//! standard input and output. Each message is one Owner API V3 request exactly as a V3 client sends
//! it over HTTP (`init_secure_api`, then `encrypted_request_v3`); the host relays its bytes to the
//! running server over mTLS as its own registered client and frames the answer back. It holds no
//! key of the extension's session: it sees ciphertext only.
//!
//! * `keyward native-host install --browser B --extension-id ID --role ROLE [--host-name HOST]`
//!   registers the client (`ext-B-ID…`, as `keyward clients add` does), writes its bundle under
//!   `DATA_DIR/native-host/HOST/` with a wrapper script, and writes the host manifest (`HOST.json`)
//!   to the browser's per-user directory. `HOST` is `keyward.owner` unless named: several extensions
//!   (a development and a store build, say) each get their own host, bundle and client, and
//!   everything an installation knows (the extension it serves, its client, its manifest) is in its
//!   bundle, found by the host's name.
//! * The browser runs the wrapper with the caller's origin (`chrome-extension://ID/`; Firefox: the
//!   app manifest's path and the extension's id); the host refuses any other extension, naming it
//!   and the one installed.
//! * `keyward native-host uninstall [--host-name HOST]` revokes the client and removes the
//!   manifest and the bundle.
//!
//! Limits: a message from the extension up to [`MAX_REQUEST`] bytes (browsers allow far more, the
//! server takes 1 MiB); an answer above the browsers' 1 MiB is replaced by an error. Standard output
//! carries frames only (logs go to standard error).

use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use keyward_core::Role;
use keyward_driver::native::{self, Decoder, NativeError};
use keyward_driver::{Link, LinkError, LinkErrorKind};
use keyward_pairing::BundleConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::call::{self, BoxLink, DEFAULT_URL, ServerArgs};
use crate::clients::{self, parse_role};

/// The host's default name in the browser (`chrome.runtime.connectNative("keyward.owner")`).
pub const HOST_NAME: &str = "keyward.owner";

/// The largest message the host takes from the extension (the server's default body limit).
pub const MAX_REQUEST: usize = 1024 * 1024;

/// The host's settings in its bundle.
const HOST_CONFIG: &str = "native-host.toml";

/// The wrapper the manifest names (browsers pass no arguments of the manifest's).
const WRAPPER: &str = "keyward-native-host";

/// JSON-RPC error code of the host's own errors (the server was not reached or answered too much).
const HOST_ERROR: i64 = -32000;

/// The browsers a host can be installed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Browser {
    /// Google Chrome.
    Chrome,
    /// Chromium.
    Chromium,
    /// Mozilla Firefox.
    Firefox,
}

impl Browser {
    fn as_str(self) -> &'static str {
        match self {
            Self::Chrome => "chrome",
            Self::Chromium => "chromium",
            Self::Firefox => "firefox",
        }
    }

    /// The browser's per-user directory of host manifests.
    fn manifest_dir(self) -> anyhow::Result<PathBuf> {
        let home = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set: give --manifest-dir")?;
        let config = std::env::var_os("XDG_CONFIG_HOME").map_or_else(|| home.join(".config"), PathBuf::from);
        Ok(match self {
            Self::Chrome => config.join("google-chrome/NativeMessagingHosts"),
            Self::Chromium => config.join("chromium/NativeMessagingHosts"),
            Self::Firefox => home.join(".mozilla/native-messaging-hosts"),
        })
    }

    /// Whether `id` can be this browser's extension id.
    fn valid_id(self, id: &str) -> bool {
        match self {
            // 32 letters a to p.
            Self::Chrome | Self::Chromium => id.len() == 32 && id.bytes().all(|b| (b'a'..=b'p').contains(&b)),
            // `name@domain` or `{uuid}`.
            Self::Firefox => {
                !id.is_empty()
                    && id.len() <= 80
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-{}".contains(&b))
            }
        }
    }

    /// Whether the arguments the browser passed name extension `id`.
    fn is_caller(self, id: &str, args: &[String]) -> bool {
        self.caller(args).is_some_and(|caller| *caller == described_extension(self, id))
    }

    /// The calling extension as the browser's arguments name it: the origin (Chrome, Chromium), or
    /// the id (Firefox, after the app manifest's path).
    fn caller(self, args: &[String]) -> Option<&String> {
        match self {
            Self::Chrome | Self::Chromium => args.first(),
            Self::Firefox => args.get(1),
        }
    }
}

/// Why the host refuses a caller that is not the extension `host` was installed for: both named.
fn refusal(host: &HostConfig, args: &[String]) -> String {
    let installed = host.extension();
    match host.browser.caller(args) {
        Some(caller) => {
            // The browser's text, shown as text: no control characters, at most 200 characters.
            let caller: String = caller.chars().filter(|c| !c.is_control()).take(200).collect();
            format!("extension {caller} is not the one installed for host {} ({installed})", host.host_name)
        }
        None => format!(
            "no calling extension was named (the browser passes it): host {} serves {installed} only",
            host.host_name
        ),
    }
}

/// Whether `name` is a host name browsers accept: lowercase letters, digits, `_` and `.`, not
/// starting or ending with a dot, no two dots in a row (Chrome's rule; Firefox's is looser).
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        && name.split('.').all(|part| !part.is_empty())
}

fn parse_host_name(name: &str) -> Result<String, String> {
    if valid_host_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "'{name}' is not a native-messaging host name: lowercase letters, digits, _ and ., not starting or ending \
             with a dot, no two dots in a row (e.g. keyward.owner)"
        ))
    }
}

/// `native-host.toml`: which extension the host serves, as which client, and where its manifest is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostConfig {
    browser: Browser,
    extension_id: String,
    manifest: PathBuf,
    /// The host's name (bundles written before it was recorded: the default).
    #[serde(default = "default_host_name")]
    host_name: String,
    /// The client it relays as (bundles written before it was recorded: the bundle's keyward.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
}

fn default_host_name() -> String {
    HOST_NAME.to_owned()
}

impl HostConfig {
    /// How the browser names the extension: its origin (Chrome, Chromium) or its id (Firefox).
    fn extension(&self) -> String {
        described_extension(self.browser, &self.extension_id)
    }
}

fn described_extension(browser: Browser, id: &str) -> String {
    match browser {
        Browser::Chrome | Browser::Chromium => format!("chrome-extension://{id}/"),
        Browser::Firefox => id.to_owned(),
    }
}

/// `keyward native-host install|uninstall`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// Register the extension's client, write its bundle and the browser's host manifest.
    Install {
        /// The browser.
        #[arg(long, value_enum)]
        browser: Browser,
        /// The extension's id (Chrome/Chromium: 32 letters a-p; Firefox: its `gecko.id`).
        #[arg(long)]
        extension_id: String,
        /// The client's role: reader, signer or owner.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The client's name (default ext-BROWSER-first 16 characters of the id).
        #[arg(long)]
        name: Option<String>,
        /// The host's name, as the extension calls it (`connectNative(NAME)`): lowercase letters,
        /// digits, _ and .; each extension (a development and a store build, say) gets its own.
        #[arg(long, default_value = HOST_NAME, value_parser = parse_host_name)]
        host_name: String,
        /// Write the manifest here instead of the browser's per-user directory (a browser started
        /// with --user-data-dir=UDD reads UDD/NativeMessagingHosts).
        #[arg(long, value_name = "DIR")]
        manifest_dir: Option<PathBuf>,
        #[command(flatten)]
        target: ServerArgs,
    },
    /// Revoke the extension's client and remove its manifest and bundle.
    Uninstall {
        /// The host's name, as `install` was given it.
        #[arg(long, default_value = HOST_NAME, value_parser = parse_host_name)]
        host_name: String,
        /// The browser (checked against the installation, if given).
        #[arg(long, value_enum)]
        browser: Option<Browser>,
        /// The extension's id (checked against the installation, if given).
        #[arg(long)]
        extension_id: Option<String>,
        /// The client's name (checked against the installation, if given; for a host installed
        /// before hosts were named, it names the bundle, with --browser and --extension-id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        target: ServerArgs,
    },
}

/// `ext-BROWSER-ID`; an id that is not plain letters and digits (Firefox's `name@domain`,
/// `{uuid}`) keeps its first 32 of them and gets 8 hex digits of its SHA-256, so two ids never
/// share a name.
fn default_name(browser: Browser, id: &str) -> String {
    let plain: String = id.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
    if plain == id {
        return format!("ext-{}-{id}", browser.as_str());
    }
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!("ext-{}-{plain}-{}", browser.as_str(), hex::encode(&digest[..4]))
}

/// An installation's bundle: `DATA_DIR/native-host/HOST_NAME`.
fn bundle_dir(target: &ServerArgs, host_name: &str) -> PathBuf {
    target.data_dir().join("native-host").join(host_name)
}

/// `path` made absolute with every symlink resolved (it must exist); an error if the result is
/// not absolute, which a browser's manifest and the host's wrapper need.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let resolved = path.canonicalize().with_context(|| format!("cannot resolve {}", path.display()))?;
    anyhow::ensure!(resolved.is_absolute(), "{} does not resolve to an absolute path", path.display());
    Ok(resolved)
}

/// Quotes a path for `sh` ('…', with ' as '\'').
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `install` or `uninstall`; returns what to print.
pub async fn manage(action: Action) -> anyhow::Result<String> {
    match action {
        Action::Install { browser, extension_id, role, name, host_name, manifest_dir, target } => {
            let install = Install { browser, extension_id: &extension_id, role, name, host_name: &host_name };
            install.run(manifest_dir, &target).await
        }
        Action::Uninstall { host_name, browser, extension_id, name, target } => {
            uninstall(&host_name, browser, extension_id.as_deref(), name.as_deref(), &target).await
        }
    }
}

/// What `install` is asked for.
struct Install<'a> {
    browser: Browser,
    extension_id: &'a str,
    role: Role,
    name: Option<String>,
    host_name: &'a str,
}

/// Directories `install` made, removed again (if still empty) when it fails.
#[derive(Default)]
struct Made(Vec<PathBuf>);

impl Made {
    /// Makes `dir` and any missing parents, remembering each one made.
    fn dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| fs::symlink_metadata(d).is_err()).collect();
        fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
        self.0.extend(missing.into_iter().rev().map(Path::to_path_buf));
        Ok(())
    }

    fn undo(self) {
        for dir in self.0.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Install<'_> {
    async fn run(self, manifest_dir: Option<PathBuf>, target: &ServerArgs) -> anyhow::Result<String> {
        let mut made = Made::default();
        let installed = self.install(manifest_dir, target, &mut made).await;
        if installed.is_err() {
            made.undo();
        }
        installed
    }

    async fn install(
        self,
        manifest_dir: Option<PathBuf>,
        target: &ServerArgs,
        made: &mut Made,
    ) -> anyhow::Result<String> {
        let Self { browser, extension_id, role, name, host_name } = self;
        anyhow::ensure!(browser.valid_id(extension_id), "'{extension_id}' is not a {} extension id", browser.as_str());
        anyhow::ensure!(
            target.unix.is_none(),
            "the native host relays over HTTPS or QUIC: name the server with --url or --quic"
        );
        // Everything is checked before anything is made: a refused install leaves nothing behind.
        let data_dir = target.data_dir();
        let store = data_dir.join("store");
        let has_store = keyward_store::FjallStore::exists_in(&store)
            .with_context(|| format!("cannot look for a store in {}", store.display()))?;
        anyhow::ensure!(
            has_store,
            "{} holds no keyward store: start `keyward serve` on it once (or name it with --data-dir) before installing \
             a native-messaging host",
            data_dir.display()
        );
        let name = name.unwrap_or_else(|| default_name(browser, extension_id));
        let manifest_dir = match manifest_dir {
            Some(dir) => dir,
            None => browser.manifest_dir()?,
        };
        let manifest = manifest_dir.join(format!("{host_name}.json"));
        anyhow::ensure!(
            fs::symlink_metadata(&manifest).is_err(),
            "{} exists: uninstall the host it names first (`keyward native-host uninstall --host-name {host_name}`)",
            manifest.display()
        );
        let bundle = bundle_dir(target, host_name);
        anyhow::ensure!(
            fs::symlink_metadata(&bundle).is_err(),
            "{} exists: a host called '{host_name}' is installed",
            bundle.display()
        );
        let exe = absolute(&std::env::current_exe().context("cannot find the keyward executable")?)?;

        // Browsers start the host by the manifest's absolute path from their own working directory:
        // every path written below is made absolute (symlinks resolved) first.
        made.dir(&manifest_dir)?;
        let manifest = absolute(&manifest_dir)?.join(format!("{host_name}.json"));
        let hosts = bundle.parent().unwrap_or(&bundle);
        made.dir(hosts)?;
        let bundle = absolute(hosts)?.join(host_name);

        // The client and its key and certificates (as `keyward clients add --out`).
        let add = clients::Action::Add { name: name.clone(), role, out: Some(bundle.clone()), uid: None, ca_key: None };
        clients::run(target, add).await?;
        let written = (|| {
            let mut endpoints = target.server_endpoints();
            // The host relays over HTTPS or QUIC: it names a URL even when the server is found by QUIC only.
            endpoints.url.get_or_insert_with(|| DEFAULT_URL.to_owned());
            let config = BundleConfig { name: name.clone(), role: role.as_str().into(), endpoints };
            // Over the one `clients add` wrote: the host relays over HTTPS or QUIC, so it names both.
            crate::certs::write_file(
                &bundle.join(keyward_pairing::bundle::CONFIG),
                config.to_toml().as_bytes(),
                0o644,
            )?;
            let host = HostConfig {
                browser,
                extension_id: extension_id.to_owned(),
                manifest: manifest.clone(),
                host_name: host_name.to_owned(),
                client: Some(name.clone()),
            };
            write_new(&bundle.join(HOST_CONFIG), toml::to_string(&host)?.as_bytes(), 0o644)?;
            let wrapper = bundle.join(WRAPPER);
            let script = format!(
                "#!/bin/sh\n# The keyward native-messaging host {host_name} for {} extension {extension_id} (client \
                 '{name}').\nexec {} native-host --bundle {} \"$@\"\n",
                browser.as_str(),
                sh_quote(&exe),
                sh_quote(&bundle)
            );
            write_new(&wrapper, script.as_bytes(), 0o700)?;
            let origins = match browser {
                Browser::Chrome | Browser::Chromium => {
                    ("allowed_origins", json!([format!("chrome-extension://{extension_id}/")]))
                }
                Browser::Firefox => ("allowed_extensions", json!([extension_id])),
            };
            let mut body = json!({
                "name": host_name,
                "description": "keyward: the wallet owner API for this extension",
                "path": wrapper,
                "type": "stdio",
            });
            body[origins.0] = origins.1;
            write_new(&manifest, serde_json::to_string_pretty(&body)?.as_bytes(), 0o644)?;
            anyhow::Ok(())
        })();
        if let Err(error) = written {
            let _ = fs::remove_file(&manifest);
            return Err(error.context(format!(
                "client '{name}' is registered but the host could not be installed: `keyward native-host uninstall \
                 --host-name {host_name}` undoes it"
            )));
        }
        Ok(format!(
            "installed the native-messaging host '{host_name}' for {} extension {extension_id}\n  client '{name}' \
             ({role}), bundle {}\n  manifest {}\n",
            browser.as_str(),
            bundle.display(),
            manifest.display()
        ))
    }
}

async fn uninstall(
    host_name: &str,
    browser: Option<Browser>,
    extension_id: Option<&str>,
    name: Option<&str>,
    target: &ServerArgs,
) -> anyhow::Result<String> {
    let read = |bundle: &Path| -> Option<HostConfig> {
        fs::read_to_string(bundle.join(HOST_CONFIG)).ok().and_then(|text| toml::from_str(&text).ok())
    };
    let mut bundle = bundle_dir(target, host_name);
    let mut host = read(&bundle);
    // A host installed before hosts were named: its bundle is named after its client.
    if host.is_none()
        && let (Some(browser), Some(id)) = (browser, extension_id)
    {
        let old = bundle_dir(target, &name.map_or_else(|| default_name(browser, id), str::to_owned));
        if let Some(old_host) = read(&old).filter(|h| h.host_name == host_name) {
            (bundle, host) = (old, Some(old_host));
        }
    }
    let client = match (&host, name) {
        (Some(host), _) => {
            let installed_client =
                host.client.clone().or_else(|| BundleConfig::read(&bundle).ok().flatten().map(|config| config.name));
            let same = browser.is_none_or(|b| b == host.browser)
                && extension_id.is_none_or(|id| id == host.extension_id)
                && name.is_none_or(|n| installed_client.as_deref() == Some(n));
            anyhow::ensure!(
                same,
                "the host '{host_name}' was installed for {} extension {} (client '{}'), not this one: nothing changed",
                host.browser.as_str(),
                host.extension_id,
                installed_client.as_deref().unwrap_or("?")
            );
            installed_client
        }
        (None, Some(name)) => Some(name.to_owned()),
        (None, None) => match (browser, extension_id) {
            (Some(browser), Some(id)) => Some(default_name(browser, id)),
            _ => None,
        },
    };
    let Some(client) = client else {
        bail!(
            "no native-messaging host '{host_name}' is installed in {} (name its client with --name to revoke it)",
            target.data_dir().display()
        );
    };
    // The client first: once revoked, a copy of the bundle is worth nothing.
    let mut out = match clients::run(target, clients::Action::Revoke { name: client.clone() }).await {
        Ok(text) => text,
        Err(error) if error.to_string().contains("no active client") => format!("client '{client}' was not active\n"),
        Err(error) => return Err(error),
    };
    if let Some(host) = &host {
        match fs::remove_file(&host.manifest) {
            Ok(()) => out.push_str(&format!("removed {}\n", host.manifest.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("cannot remove {}", host.manifest.display())),
        }
    }
    match fs::remove_dir_all(&bundle) {
        Ok(()) => out.push_str(&format!("removed {}\n", bundle.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot remove {}", bundle.display())),
    }
    Ok(out)
}

/// A JSON-RPC error answer from the host itself.
fn host_error(id: &Value, code: i64, message: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string().into_bytes()
}

/// The relay: standard input to the server, answers to standard output, until standard input ends.
pub async fn run(bundle: Option<PathBuf>, browser_args: &[String]) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    let result = relay(bundle, browser_args, &mut stdout).await;
    if let Err(error) = &result {
        // Tell the extension why it is closed (the browser shows standard error only in its log).
        let message = format!("keyward native-host: {error:#}");
        if let Ok(frame) = native::encode(&host_error(&Value::Null, HOST_ERROR, &message)) {
            let _ = stdout.write_all(&frame).await;
            let _ = stdout.flush().await;
        }
    }
    result
}

async fn relay(bundle: Option<PathBuf>, browser_args: &[String], stdout: &mut tokio::io::Stdout) -> anyhow::Result<()> {
    let bundle = bundle.context("no --bundle: run the wrapper `keyward native-host install` wrote")?;
    let host: HostConfig = toml::from_str(
        &fs::read_to_string(bundle.join(HOST_CONFIG)).context("the host's bundle is missing or unreadable")?,
    )
    .context("the host's bundle is damaged")?;
    if !host.browser.is_caller(&host.extension_id, browser_args) {
        let why = refusal(&host, browser_args);
        tracing::warn!("refused: {why}");
        bail!("refused: {why}");
    }
    let config = BundleConfig::read(&bundle).ok().flatten().context("the host's bundle has no keyward.toml")?;
    let mut stdin = tokio::io::stdin();
    let mut decoder = Decoder::new(MAX_REQUEST);
    let mut server: Option<BoxLink> = None;
    let mut session: Option<keyward_driver::SessionId> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let message = match decoder.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => {
                let want = decoder.wanted().min(chunk.len());
                let read = stdin.read(&mut chunk[..want]).await.context("cannot read standard input")?;
                if read == 0 {
                    // The browser closed the port: a clean end, or a frame cut short.
                    decoder.finish().map_err(|e| anyhow::anyhow!("{e}"))?;
                    if let Some(mut link) = server.take() {
                        link.close().await;
                    }
                    return Ok(());
                }
                decoder.push(&chunk[..read]);
                continue;
            }
            Err(error @ NativeError::TooLarge { .. }) => bail!("{error}"),
            Err(error) => bail!("{error}"),
        };
        let answer = answer(&message, &config, &bundle, &mut server, &mut session).await;
        let frame = native::encode(&answer).unwrap_or_else(|_| {
            let id = request_id(&message);
            let too_large = "the server's answer is larger than a browser takes (1 MiB)";
            native::encode(&host_error(&id, HOST_ERROR, too_large)).unwrap_or_default()
        });
        stdout.write_all(&frame).await.context("cannot write standard output")?;
        stdout.flush().await.context("cannot write standard output")?;
    }
}

fn request_id(message: &[u8]) -> Value {
    serde_json::from_slice::<Value>(message).ok().and_then(|v| v.get("id").cloned()).unwrap_or(Value::Null)
}

/// One message's answer: the server's, or the host's error.
async fn answer(
    message: &[u8],
    config: &BundleConfig,
    bundle: &Path,
    server: &mut Option<BoxLink>,
    session: &mut Option<keyward_driver::SessionId>,
) -> Vec<u8> {
    if let Err(error) = native::check_json(message) {
        return host_error(&Value::Null, -32700, &format!("Parse error: {error}"));
    }
    if server.is_none() {
        match connect(config, bundle).await {
            Ok(link) => *server = Some(link),
            Err(error) => {
                tracing::warn!("cannot reach keyward: {error:#}");
                let text = format!("keyward native-host cannot reach the server: {error:#}");
                return host_error(&request_id(message), HOST_ERROR, &text);
            }
        }
    }
    let Some(link) = server.as_mut() else { return Vec::new() };
    match link.exchange(message.to_vec(), *session).await {
        Ok(exchange) => {
            if exchange.session.is_some() {
                *session = exchange.session;
            }
            exchange.body
        }
        Err(error) => {
            // The connection is gone (the server restarted, say): the next message reconnects.
            *server = None;
            *session = None;
            let text = format!("the request to keyward failed: {}", describe(&error));
            tracing::warn!("{text}");
            host_error(&request_id(message), HOST_ERROR, &text)
        }
    }
}

/// What the extension is told when the server could not be asked or did not answer.
fn describe(error: &LinkError) -> String {
    match error.kind() {
        LinkErrorKind::Unreachable => format!("the server could not be reached (the request did not run): {error}"),
        LinkErrorKind::Closed => format!("the connection ended before the answer (the request may have run): {error}"),
        LinkErrorKind::Refused => format!("the server refused the request (it did not run): {error}"),
        LinkErrorKind::TimedOut => format!("no answer in time (the request may have run): {error}"),
        LinkErrorKind::Revoked => {
            "this client was revoked: the owner must install the host again (`keyward native-host install`)".into()
        }
        LinkErrorKind::Unknown => "the server does not know this host's client certificate: install the host again \
                                   (`keyward native-host install`)"
            .into(),
        _ => error.to_string(),
    }
}

/// The link the bundle names: QUIC if it has a QUIC address, else HTTPS.
async fn connect(config: &BundleConfig, bundle: &Path) -> anyhow::Result<BoxLink> {
    let address = match &config.endpoints.quic {
        Some(quic) => {
            let addr = quic.parse().with_context(|| format!("'{quic}' is not a QUIC address"))?;
            call::Address::quic(addr, bundle)?
        }
        None => {
            let url = config.endpoints.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
            call::Address::url(&url, bundle).await?
        }
    };
    call::connect(&address).await
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "a test fails by panicking, with the value in the message")]

    use super::*;

    #[test]
    fn only_the_installed_extension_is_a_caller() {
        let id = "abcdefghijklmnopabcdefghijklmnop";
        assert!(Browser::Chromium.valid_id(id) && !Browser::Chromium.valid_id("qbcdefghijklmnopabcdefghijklmnop"));
        let origin = |o: &str| vec![o.to_owned()];
        assert!(Browser::Chromium.is_caller(id, &origin(&format!("chrome-extension://{id}/"))));
        assert!(!Browser::Chromium.is_caller(id, &origin("chrome-extension://bbcdefghijklmnopabcdefghijklmnop/")));
        assert!(!Browser::Chrome.is_caller(id, &[]));
        let firefox = vec!["/path/to/keyward.owner.json".to_owned(), "wallet@example.org".to_owned()];
        assert!(Browser::Firefox.is_caller("wallet@example.org", &firefox));
        assert!(!Browser::Firefox.is_caller("other@example.org", &firefox));
        assert!(
            Browser::Firefox.valid_id("{0b4f7e3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b}") && !Browser::Firefox.valid_id("a b")
        );
        let firefox = default_name(Browser::Firefox, "{0b4f7e3a-1c2d}");
        assert!(firefox.starts_with("ext-firefox-0b4f7e3a1c2d-") && firefox.len() == 33, "{firefox}");
        assert_ne!(default_name(Browser::Firefox, "a@b.c"), default_name(Browser::Firefox, "ab@c"));
        assert_eq!(default_name(Browser::Chrome, id), format!("ext-chrome-{id}"));
        assert!(default_name(Browser::Firefox, &"x@".repeat(40)).len() <= 64);
    }

    #[test]
    fn host_names_follow_chromes_rule() {
        for good in ["keyward.owner", "keyward.dev", "com.example.wallet_2", "a", "x_y"] {
            assert!(valid_host_name(good) && parse_host_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".keyward", "keyward.", "keyward..owner", "Keyward.owner", "key-ward", "key ward", "k/w", "é"]
        {
            assert!(!valid_host_name(bad), "{bad:?}");
        }
        let error = parse_host_name("Keyward").unwrap_err();
        assert!(error.contains("'Keyward' is not a native-messaging host name: lowercase letters"), "{error}");
    }

    #[test]
    fn a_refusal_names_the_calling_and_the_installed_extension() {
        let host = |browser, id: &str| HostConfig {
            browser,
            extension_id: id.into(),
            manifest: PathBuf::from("m.json"),
            host_name: "keyward.dev".into(),
            client: None,
        };
        let chromium = host(Browser::Chromium, "abcdefghijklmnopabcdefghijklmnop");
        let caller = vec!["chrome-extension://bbcdefghijklmnopabcdefghijklmnop/".to_owned()];
        assert_eq!(
            refusal(&chromium, &caller),
            "extension chrome-extension://bbcdefghijklmnopabcdefghijklmnop/ is not the one installed for host \
             keyward.dev (chrome-extension://abcdefghijklmnopabcdefghijklmnop/)"
        );
        assert_eq!(
            refusal(&chromium, &[]),
            "no calling extension was named (the browser passes it): host keyward.dev serves \
             chrome-extension://abcdefghijklmnopabcdefghijklmnop/ only"
        );
        let firefox = host(Browser::Firefox, "wallet@example.org");
        let caller = vec!["/m.json".to_owned(), "other@example.org\u{1b}[2J".to_owned()];
        assert_eq!(
            refusal(&firefox, &caller),
            "extension other@example.org[2J is not the one installed for host keyward.dev (wallet@example.org)"
        );
        // A bundle written before hosts were named reads as the default host's.
        let old = "browser = \"chrome\"\nextension_id = \"abcdefghijklmnopabcdefghijklmnop\"\nmanifest = \"m.json\"\n";
        let old: HostConfig = toml::from_str(old).unwrap();
        assert_eq!((old.host_name.as_str(), old.client), (HOST_NAME, None));
    }

    #[test]
    fn link_failures_are_described_by_kind() {
        let said = |kind| describe(&LinkError::new(kind, "detail"));
        assert_eq!(
            said(LinkErrorKind::Unreachable),
            "the server could not be reached (the request did not run): detail"
        );
        assert_eq!(
            said(LinkErrorKind::Closed),
            "the connection ended before the answer (the request may have run): detail"
        );
        assert_eq!(said(LinkErrorKind::Refused), "the server refused the request (it did not run): detail");
        assert_eq!(said(LinkErrorKind::TimedOut), "no answer in time (the request may have run): detail");
        assert!(said(LinkErrorKind::Revoked).starts_with("this client was revoked: "));
        assert!(said(LinkErrorKind::Unknown).starts_with("the server does not know this host's client certificate"));
    }

    #[test]
    fn wrapper_paths_are_quoted_for_the_shell() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
