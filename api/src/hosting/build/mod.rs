//! Builds from source: what runs to turn a site's source into the folder it serves, and running
//! it in the sandbox (`decentraspace-sandbox`: bubblewrap, no network, no credentials, limits).
//!
//! A site's settings name its root folder (monorepos), install and build commands and output
//! folder; what is not set is detected from the source: the package manager from the lockfile,
//! the build from `package.json`'s `build` script, and a source without `package.json` is served
//! as it is. Only the output folder leaves the sandbox, through [`output::collect`].

mod cache;
pub(crate) mod minutes;
pub(crate) mod output;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use decentraspace_sandbox::{Limits, Outcome, Run, Sandbox};
use tokio::sync::mpsc;

use crate::config::Config;

/// The longest command a setting may hold.
pub(crate) const MAX_COMMAND: usize = 1000;

/// A site's build settings as stored: each unset one is detected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The folder of the source the build runs in.
    pub root_dir: Option<String>,
    /// Installs the dependencies.
    pub install_command: Option<String>,
    /// Builds the site.
    pub build_command: Option<String>,
}

/// The package managers told apart by their lockfiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackageManager {
    Npm,
    Pnpm,
    Yarn,
}

impl PackageManager {
    /// The manager whose lockfile the folder holds (npm without one).
    fn of(root: &Path) -> Self {
        if root.join("pnpm-lock.yaml").is_file() {
            Self::Pnpm
        } else if root.join("yarn.lock").is_file() {
            Self::Yarn
        } else {
            Self::Npm
        }
    }

    /// Installs exactly what the lockfile says (npm without a lockfile installs from
    /// `package.json`).
    fn install(self, root: &Path) -> &'static str {
        match self {
            Self::Npm if root.join("package-lock.json").is_file() => "npm ci",
            Self::Npm if root.join("npm-shrinkwrap.json").is_file() => "npm ci",
            Self::Npm => "npm install",
            Self::Pnpm => "pnpm install --frozen-lockfile",
            Self::Yarn => "yarn install --frozen-lockfile",
        }
    }

    fn run_build(self) -> &'static str {
        match self {
            Self::Npm => "npm run build",
            Self::Pnpm => "pnpm run build",
            Self::Yarn => "yarn run build",
        }
    }
}

/// What a deployment's build runs: each step's command, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The folder the steps run in, relative to the source's top.
    pub root: PathBuf,
    /// Installs the dependencies.
    pub install: Option<String>,
    /// Builds the site.
    pub build: Option<String>,
}

impl Plan {
    /// Whether anything runs (a source without `package.json` and without commands does not).
    pub(crate) fn runs(&self) -> bool {
        self.install.is_some() || self.build.is_some()
    }

    /// The plan for the source whose top is `top` (inside the unpacked tree): the settings,
    /// with what they leave unset detected.
    pub(crate) fn of(settings: &Settings, top: &Path) -> Result<Self, String> {
        let root = match settings.root_dir.as_deref() {
            Some(dir) => super::unpack::inside_path(Path::new(dir))
                .map_err(|_| format!("root_dir {dir:?} must be a folder inside the source"))?,
            None => PathBuf::new(),
        };
        let at = top.join(&root);
        if !at.is_dir() {
            return Err(format!("the source has no folder {:?} (root_dir)", root.display()));
        }
        let manager = PackageManager::of(&at);
        let package = std::fs::read(at.join("package.json")).ok();
        let has_build_script = match &package {
            Some(bytes) => {
                let json: serde_json::Value = serde_json::from_slice(bytes)
                    .map_err(|e| format!("package.json is not valid JSON: {e}"))?;
                json.pointer("/scripts/build").is_some_and(serde_json::Value::is_string)
            }
            None => false,
        };
        let install = match &settings.install_command {
            Some(command) => Some(command.clone()).filter(|c| !c.is_empty()),
            None => package.is_some().then(|| manager.install(&at).to_owned()),
        };
        let build = match &settings.build_command {
            Some(command) => Some(command.clone()).filter(|c| !c.is_empty()),
            None => has_build_script.then(|| manager.run_build().to_owned()),
        };
        Ok(Self { root, install, build })
    }
}

/// Checks a command setting: one line of at most [`MAX_COMMAND`] printable characters (empty
/// means "run nothing for this step").
pub(crate) fn valid_command(name: &str, command: &str) -> Result<(), String> {
    if command.len() > MAX_COMMAND {
        return Err(format!("{name} is longer than {MAX_COMMAND} characters"));
    }
    if command.chars().any(char::is_control) {
        return Err(format!("{name} must be one line without control characters"));
    }
    Ok(())
}

/// The address of `BUILD_REGISTRY_URL` (`http://host:port`), or why it is not usable.
async fn registry_address(url: &str) -> Result<SocketAddr, String> {
    let bad = |why: &str| format!("BUILD_REGISTRY_URL {url:?} {why}");
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("must be an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let authority =
        if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    tokio::net::lookup_host(&authority)
        .await
        .map_err(|e| bad(&format!("cannot be resolved: {e}")))?
        .next()
        .ok_or_else(|| bad("resolves to no address"))
}

/// How a build step ended, for the deployment's log and error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// The host cannot sandbox builds.
    #[error("builds are not available on this server: {0}")]
    Unavailable(String),
    /// The step's command failed.
    #[error("the {step} command ({command}) exited with status {code}")]
    Exited { step: &'static str, command: String, code: i32 },
    /// The step's command was killed by a signal.
    #[error("the {step} command ({command}) was killed by signal {signal}")]
    Signaled { step: &'static str, command: String, signal: i32 },
    /// The step passed a limit.
    #[error("the {step} step was stopped: it {limit}")]
    Limit { step: &'static str, limit: decentraspace_sandbox::Limit },
    /// The sandbox could not run the step.
    #[error("the {step} step could not start: {reason}")]
    Sandbox { step: &'static str, reason: String },
}

/// Builds from source on this server: the sandbox and the limits of each step, or why this
/// server cannot build.
#[derive(Debug, Clone)]
pub struct Builder {
    sandbox: Result<Sandbox, Arc<str>>,
    limits: Limits,
    /// Where install steps fetch packages, if anywhere.
    registry: Option<SocketAddr>,
    /// The package managers' caches kept between builds.
    cache: cache::BuildCache,
}

impl Builder {
    /// The builder the configuration asks for; a host that cannot sandbox is logged once here,
    /// and each deployment that needs a build then fails saying why.
    pub async fn new(config: &Config) -> Self {
        const MIB: u64 = 1 << 20;
        let limits = Limits {
            wall: Duration::from_secs(config.build_time_limit_secs),
            cpu: Duration::from_secs(config.build_cpu_limit_secs),
            memory_bytes: config.build_memory_limit_mb * MIB,
            processes: config.build_process_limit,
            disk_bytes: config.build_disk_limit_mb * MIB,
            tmp_bytes: config.build_tmp_limit_mb * MIB,
        };
        let mut sandbox = Sandbox::new(&config.build_bwrap)
            .await
            .map(|sandbox| match &config.build_tools_dir {
                Some(tools) => sandbox.with_tools(tools),
                None => sandbox,
            })
            .map_err(|err| err.to_string());
        let registry = match config.build_registry_url.as_deref().map(registry_address) {
            Some(found) => match found.await {
                Ok(address) => Some(address),
                Err(err) => {
                    sandbox = Err(err);
                    None
                }
            },
            None => None,
        };
        let sandbox = sandbox.map_err(|err| {
            tracing::warn!(target: "api::deploy", %err, "builds from source are not available");
            Arc::from(err)
        });
        let cache_root = match &config.build_cache_dir {
            Some(dir) => dir.clone(),
            None => config.deploy_work_dir.join("decentraspace-build-cache"),
        };
        let cache = cache::BuildCache::new(cache_root, config.build_cache_max_mb * MIB);
        Self { sandbox, limits, registry, cache }
    }

    /// Runs the plan's steps in `top` (the source, read-write to the build), one after another,
    /// each line of output going to `lines`. Stops at the first step that does not succeed.
    /// An untrusted source (a fork's pull request) gets no build cache: what its install wrote
    /// there would reach the site's next production build.
    pub(crate) async fn run(
        &self,
        site: i64,
        plan: &Plan,
        top: &Path,
        env: &[(String, String)],
        trusted: bool,
        lines: &mpsc::Sender<String>,
    ) -> Result<(), BuildError> {
        let sandbox =
            self.sandbox.as_ref().map_err(|reason| BuildError::Unavailable(reason.to_string()))?;
        let cache = match plan.install {
            Some(_) if !trusted => {
                let _ = lines.send("build cache: none (an untrusted source)".into()).await;
                None
            }
            Some(_) => {
                let (cache, source) = (self.cache.clone(), top.join(&plan.root));
                let folder = tokio::task::spawn_blocking(move || cache.folder(site, &source))
                    .await
                    .map_err(|e| BuildError::Sandbox { step: "install", reason: e.to_string() })?
                    .map_err(|e| BuildError::Sandbox { step: "install", reason: e.to_string() })?;
                let said = if folder.reused { "reused" } else { "new" };
                let _ = lines.send(format!("build cache: {said} (lockfile {})", folder.key)).await;
                Some(folder)
            }
            None => None,
        };
        // Only the install step reaches the registry, told to the package managers by their
        // own settings; the build runs without a network.
        let mut install_env = env.to_vec();
        if let Some(registry) = self.registry {
            let url = format!("http://127.0.0.1:{}/", registry.port());
            for name in ["npm_config_registry", "YARN_REGISTRY", "YARN_NPM_REGISTRY_SERVER"] {
                install_env.push((name.to_owned(), url.clone()));
            }
        }
        for name in ["npm_config_audit", "npm_config_fund", "npm_config_update_notifier"] {
            install_env.push((name.to_owned(), "false".to_owned()));
        }
        // Each package manager keeps its downloads in the cache and uses them before asking
        // (without a cache, in the run's own `/tmp`).
        let cache_env: &[(&str, &str)] = if cache.is_some() {
            &[
                ("npm_config_cache", "/cache/npm"),
                ("npm_config_prefer_offline", "true"),
                ("npm_config_store_dir", "/cache/pnpm"),
                ("YARN_CACHE_FOLDER", "/cache/yarn"),
            ]
        } else {
            &[
                ("npm_config_cache", "/tmp/npm"),
                ("npm_config_store_dir", "/tmp/pnpm"),
                ("YARN_CACHE_FOLDER", "/tmp/yarn"),
            ]
        };
        for &(name, value) in cache_env {
            install_env.push((name.to_owned(), value.to_owned()));
        }
        let cache_path = cache.as_ref().map(|c| c.path.as_path());
        let steps = [
            ("install", &plan.install, install_env.as_slice(), self.registry, cache_path),
            ("build", &plan.build, env, None, None),
        ];
        for (step, command, env, registry, cache) in steps {
            let Some(command) = command else { continue };
            let _ = lines.send(format!("$ {command}")).await;
            let run = Run {
                dir: top,
                workdir: &plan.root,
                command,
                env,
                limits: self.limits,
                registry,
                cache,
            };
            let finished = sandbox
                .run(run, lines.clone())
                .await
                .map_err(|e| BuildError::Sandbox { step, reason: e.to_string() })?;
            let _ = lines
                .send(format!(
                    "{step} finished in {:.1} s ({:.1} s of CPU)",
                    finished.wall.as_secs_f64(),
                    finished.cpu.as_secs_f64()
                ))
                .await;
            if registry.is_some() {
                let n = finished.registry_connections;
                let _ = lines.send(format!("{step} connected to the registry {n} times")).await;
            }
            match finished.outcome {
                Outcome::Exited(0) => {}
                Outcome::Exited(code) => {
                    return Err(BuildError::Exited { step, command: command.clone(), code });
                }
                Outcome::Signaled(signal) => {
                    return Err(BuildError::Signaled { step, command: command.clone(), signal });
                }
                Outcome::Limit(limit) => return Err(BuildError::Limit { step, limit }),
            }
        }
        if cache.is_some() {
            let caches = self.cache.clone();
            match tokio::task::spawn_blocking(move || caches.trim()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(freed)) => {
                    tracing::info!(target: "api::deploy", freed, "build caches trimmed to their budget");
                }
                Ok(Err(err)) => {
                    tracing::warn!(target: "api::deploy", %err, "cannot trim the build caches")
                }
                Err(err) => {
                    tracing::warn!(target: "api::deploy", %err, "cannot trim the build caches")
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn plan(settings: &Settings, files: &[(&str, &str)]) -> Result<Plan, String> {
        let dir = source(files);
        Plan::of(settings, dir.path())
    }

    const BUILD: &str = r#"{"scripts": {"build": "vite build"}}"#;

    #[test]
    fn the_package_manager_and_build_come_from_the_source() {
        let none = Settings::default();
        let npm =
            plan(&none, &[("package.json", BUILD), ("package-lock.json", "{}")]).expect("npm");
        assert_eq!(
            (npm.install.as_deref(), npm.build.as_deref()),
            (Some("npm ci"), Some("npm run build"))
        );
        let pnpm = plan(&none, &[("package.json", BUILD), ("pnpm-lock.yaml", "")]).expect("pnpm");
        assert_eq!(pnpm.install.as_deref(), Some("pnpm install --frozen-lockfile"));
        assert_eq!(pnpm.build.as_deref(), Some("pnpm run build"));
        let yarn = plan(&none, &[("package.json", BUILD), ("yarn.lock", "")]).expect("yarn");
        assert_eq!(yarn.install.as_deref(), Some("yarn install --frozen-lockfile"));
        let unlocked = plan(&none, &[("package.json", "{}")]).expect("no lockfile");
        assert_eq!((unlocked.install.as_deref(), unlocked.build), (Some("npm install"), None));
        let plain = plan(&none, &[("index.html", "<h1>hi</h1>")]).expect("static");
        assert!(!plain.runs());
    }

    #[test]
    fn settings_win_over_what_is_detected() {
        let settings = Settings {
            root_dir: Some("apps/web".into()),
            install_command: Some(String::new()),
            build_command: Some("node build.js".into()),
        };
        let plan = plan(
            &settings,
            &[("apps/web/package.json", BUILD), ("apps/web/package-lock.json", "{}")],
        )
        .expect("plan");
        assert_eq!(plan.root, PathBuf::from("apps/web"));
        assert_eq!((plan.install, plan.build.as_deref()), (None, Some("node build.js")));
    }

    #[test]
    fn bad_settings_and_sources_are_explained() {
        let outside = Settings { root_dir: Some("../x".into()), ..Settings::default() };
        assert!(plan(&outside, &[]).expect_err("outside").contains("inside the source"));
        let missing = Settings { root_dir: Some("apps/none".into()), ..Settings::default() };
        assert!(plan(&missing, &[]).expect_err("missing").contains("no folder"));
        let broken = plan(&Settings::default(), &[("package.json", "{oops")]).expect_err("json");
        assert!(broken.contains("package.json"), "{broken}");
        assert!(valid_command("build_command", "npm run build && cp -r a b").is_ok());
        assert!(valid_command("build_command", "a\nb").is_err());
        assert!(valid_command("build_command", &"x".repeat(MAX_COMMAND + 1)).is_err());
    }
}
