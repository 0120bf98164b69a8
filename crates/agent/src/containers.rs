//! From a pod's spec to what the runtime starts: volumes made real on this node, environment
//! (with `valueFrom`), command (with the image's defaults), user and security context, limits.
//!
//! Every error names the container or volume and what is wrong; the supervisor reports it as
//! `CreateContainerConfigError` and the rest of the node carries on.

use crate::images::PulledImage;
use client::Client;
use runtime::{ContainerSpec, Isolation, Mount, OciOptions};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub const LOG_MAX_BYTES: u64 = 10 << 20;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Volume types this node can make real.
const SUPPORTED_VOLUMES: &str = "emptyDir, hostPath, configMap, secret, projected, downwardAPI";

/// One pod, as the node prepares it.
#[derive(Clone)]
pub struct PodContext {
    pub client: Arc<Client>,
    pub pod: Value,
    pub data_dir: PathBuf,
    /// Where container logs go (`LogStorage`): the data directory, or one in memory.
    pub log_dir: PathBuf,
}

impl PodContext {
    pub fn namespace(&self) -> &str {
        self.pod["metadata"]["namespace"].as_str().unwrap_or("default")
    }

    pub fn name(&self) -> &str {
        self.pod["metadata"]["name"].as_str().unwrap_or("")
    }

    pub fn uid(&self) -> &str {
        self.pod["metadata"]["uid"].as_str().unwrap_or("")
    }

    pub fn pod_dir(&self) -> PathBuf {
        self.data_dir.join("pods").join(self.pod_dir_name())
    }

    /// The pod's container logs: `LOG_DIR/pods/<pod>/<container>/<start>.log`.
    pub fn pod_log_dir(&self) -> PathBuf {
        self.log_dir.join("pods").join(self.pod_dir_name())
    }

    fn pod_dir_name(&self) -> String {
        format!("{}_{}_{}", self.namespace(), self.name(), self.uid())
    }

    /// A ConfigMap or Secret of the pod's namespace; None if it does not exist. The last copy
    /// read is kept on disk (owner-only) so the pod starts again with no server reachable.
    async fn object(&self, plural: &str, name: &str) -> Result<Option<Value>, String> {
        let cache = self.data_dir.join("objects").join(self.namespace()).join(plural).join(format!("{name}.json"));
        match self.client.get(&format!("/api/v1/namespaces/{}/{plural}/{name}", self.namespace())).await {
            Ok(object) => {
                if let Err(e) = write_private(&cache, &serde_json::to_vec(&object).unwrap_or_default()) {
                    tracing::warn!(error = %e, "cannot keep a copy of {plural}/{name} for offline restarts");
                }
                Ok(Some(object))
            }
            Err(e) if e.is_not_found() => {
                let _ = std::fs::remove_file(&cache);
                Ok(None)
            }
            Err(client::ClientError::Connect { .. }) => match std::fs::read(&cache) {
                Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
                Err(_) => Err(format!("{plural} {name:?} cannot be read: the server is unreachable")),
            },
            Err(e) => Err(format!("{plural} {name:?}: {e}")),
        }
    }

    /// The data of a ConfigMap (`data`, `binaryData`) or Secret (`data`, base64) as bytes.
    async fn data_of(&self, plural: &str, name: &str, optional: bool) -> Result<HashMap<String, Vec<u8>>, String> {
        let kind = if plural == "secrets" { "secret" } else { "configmap" };
        let Some(object) = self.object(plural, name).await? else {
            return if optional { Ok(HashMap::new()) } else { Err(format!("{kind} {name:?} not found")) };
        };
        let mut data = HashMap::new();
        let encoded = |v: &Value| v.as_str().and_then(decode_base64);
        for (key, value) in object["data"].as_object().into_iter().flatten() {
            let bytes = if plural == "secrets" {
                encoded(value).ok_or_else(|| format!("secret {name:?} key {key:?} is not base64"))?
            } else {
                value.as_str().unwrap_or("").as_bytes().to_vec()
            };
            data.insert(key.clone(), bytes);
        }
        for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
            data.insert(
                key.clone(),
                encoded(value).ok_or_else(|| format!("{kind} {name:?} key {key:?} is not base64"))?,
            );
        }
        Ok(data)
    }

    async fn value_from(&self, from: &Value) -> Result<String, String> {
        let (plural, reference) = if from["configMapKeyRef"].is_object() {
            ("configmaps", &from["configMapKeyRef"])
        } else if from["secretKeyRef"].is_object() {
            ("secrets", &from["secretKeyRef"])
        } else if from["fieldRef"].is_object() {
            return Ok(api::selector::field_value(&self.pod, from["fieldRef"]["fieldPath"].as_str().unwrap_or("")));
        } else if from["resourceFieldRef"].is_object() {
            return Err("resourceFieldRef is not supported".into());
        } else {
            return Err("valueFrom names no source".into());
        };
        let name = reference["name"].as_str().unwrap_or("");
        let key = reference["key"].as_str().unwrap_or("");
        let optional = reference["optional"].as_bool() == Some(true);
        let data = self.data_of(plural, name, optional).await?;
        match data.get(key) {
            Some(bytes) => {
                String::from_utf8(bytes.clone()).map_err(|_| format!("key {key:?} of {name:?} is not UTF-8"))
            }
            None if optional => Ok(String::new()),
            None => Err(format!("{name:?} has no key {key:?}")),
        }
    }

    /// Makes the pod's volumes real; returns each volume's host path.
    pub async fn volumes(&self) -> Result<HashMap<String, PathBuf>, String> {
        let mut paths = HashMap::new();
        let root = self.pod_dir().join("volumes");
        for volume in self.pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = volume["name"].as_str().unwrap_or("");
            let fail = |why: String| format!("volume {name:?}: {why}");
            let dir = root.join(name);
            let path = if volume["emptyDir"].is_object() {
                // World-writable as in Kubernetes: any user the containers run as may write.
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir_all(&dir)
                    .and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)))
                    .map_err(|e| fail(e.to_string()))?;
                dir
            } else if volume["hostPath"].is_object() {
                host_path(&volume["hostPath"]).map_err(fail)?
            } else if let Some(source) = volume.get("configMap").filter(|v| v.is_object()) {
                let files = self.projected_files(&json_source("configMap", source)).await.map_err(fail)?;
                write_files(&dir, &files, mode(source)).map_err(fail)?;
                dir
            } else if let Some(source) = volume.get("secret").filter(|v| v.is_object()) {
                let mut named = source.clone();
                named["name"] = source["secretName"].clone();
                let files = self.projected_files(&json_source("secret", &named)).await.map_err(fail)?;
                write_files(&dir, &files, mode(source)).map_err(fail)?;
                dir
            } else if let Some(source) = volume.get("downwardAPI").filter(|v| v.is_object()) {
                let files = self.projected_files(&json_source("downwardAPI", source)).await.map_err(fail)?;
                write_files(&dir, &files, mode(source)).map_err(fail)?;
                dir
            } else if let Some(projected) = volume.get("projected").filter(|v| v.is_object()) {
                let mut files = Vec::new();
                for source in projected["sources"].as_array().into_iter().flatten() {
                    files.extend(self.projected_files(source).await.map_err(fail)?);
                }
                write_files(&dir, &files, mode(projected)).map_err(fail)?;
                dir
            } else {
                let kind =
                    volume.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()).unwrap_or_default();
                return Err(fail(format!(
                    "type {kind:?} is not supported on this node (supported: {SUPPORTED_VOLUMES})"
                )));
            };
            paths.insert(name.to_string(), path);
        }
        Ok(paths)
    }

    /// Files of one projection source (`{configMap|secret|downwardAPI: {...}}`): (relative
    /// path, content, mode).
    async fn projected_files(&self, source: &Value) -> Result<Vec<(PathBuf, Vec<u8>, Option<u32>)>, String> {
        let (plural, spec) = if source["configMap"].is_object() {
            ("configmaps", &source["configMap"])
        } else if source["secret"].is_object() {
            ("secrets", &source["secret"])
        } else if source["downwardAPI"].is_object() {
            let mut files = Vec::new();
            for item in source["downwardAPI"]["items"].as_array().into_iter().flatten() {
                let path = relative(item["path"].as_str().unwrap_or(""))?;
                let field = item["fieldRef"]["fieldPath"].as_str().ok_or("downwardAPI items need a fieldRef")?;
                let value = api::selector::field_value(&self.pod, field);
                files.push((path, value.into_bytes(), item["mode"].as_u64().map(|m| m as u32)));
            }
            return Ok(files);
        } else {
            let kind = source.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
            return Err(format!("projection source {kind:?} is not supported (configMap, secret, downwardAPI)"));
        };
        let name = spec["name"].as_str().unwrap_or("");
        let optional = spec["optional"].as_bool() == Some(true);
        let data = self.data_of(plural, name, optional).await?;
        let mut files = Vec::new();
        match spec["items"].as_array() {
            Some(items) => {
                for item in items {
                    let key = item["key"].as_str().unwrap_or("");
                    let Some(content) = data.get(key) else {
                        if optional {
                            continue;
                        }
                        return Err(format!("{name:?} has no key {key:?}"));
                    };
                    let path = relative(item["path"].as_str().unwrap_or(key))?;
                    files.push((path, content.clone(), item["mode"].as_u64().map(|m| m as u32)));
                }
            }
            None => {
                for (key, content) in data {
                    files.push((relative(&key)?, content, None));
                }
            }
        }
        Ok(files)
    }

    /// Resolves containers into what the runtime starts. `isolation` builds the runtime part
    /// for each container (OCI or process); `images` holds the pulled image of each.
    pub async fn resolve(
        &self,
        containers: &[Value],
        volumes: &HashMap<String, PathBuf>,
        images: &HashMap<String, PulledImage>,
        runtime: &str,
    ) -> Result<Vec<ContainerSpec>, String> {
        let mut specs = Vec::new();
        for c in containers {
            let name = c["name"].as_str().unwrap_or("").to_string();
            let fail = |why: String| format!("container {name:?}: {why}");
            let image = c["image"].as_str().and_then(|i| images.get(i));
            let defaults = image.map(|i| i.unpacked.defaults.clone()).unwrap_or_default();
            let strings = |v: &Value| -> Vec<String> {
                v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
            };
            let argv = command_line(strings(&c["command"]), strings(&c["args"]), &defaults, c["image"].as_str());
            if argv.is_empty() {
                return Err(fail("no command: set `command`, or use an image with an entrypoint".into()));
            }
            let mut env: Vec<(String, String)> =
                vec![("PATH".into(), DEFAULT_PATH.into()), ("HOSTNAME".into(), self.hostname())];
            for (key, value) in &defaults.env {
                set_env(&mut env, key, value.clone());
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                let (plural, reference) = if from["secretRef"].is_object() {
                    ("secrets", &from["secretRef"])
                } else {
                    ("configmaps", &from["configMapRef"])
                };
                let optional = reference["optional"].as_bool() == Some(true);
                let data =
                    self.data_of(plural, reference["name"].as_str().unwrap_or(""), optional).await.map_err(fail)?;
                let prefix = from["prefix"].as_str().unwrap_or("");
                for (key, value) in data {
                    set_env(&mut env, &format!("{prefix}{key}"), String::from_utf8_lossy(&value).into_owned());
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let key = e["name"].as_str().unwrap_or("").to_string();
                let value = match (&e["value"], &e["valueFrom"]) {
                    (Value::String(v), _) => expand(v, &env),
                    (_, from) if from.is_object() => {
                        self.value_from(from).await.map_err(|why| fail(format!("env {key}: {why}")))?
                    }
                    _ => String::new(),
                };
                set_env(&mut env, &key, value);
            }
            let mut mounts = Vec::new();
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let volume = m["name"].as_str().unwrap_or("");
                let source = volumes
                    .get(volume)
                    .ok_or_else(|| fail(format!("volumeMount {volume:?} names no volume of the pod")))?;
                let source = match m["subPath"].as_str().filter(|s| !s.is_empty()) {
                    Some(sub) => source.join(relative(sub).map_err(fail)?),
                    None => source.clone(),
                };
                let destination = m["mountPath"].as_str().filter(|p| p.starts_with('/'));
                let destination =
                    destination.ok_or_else(|| fail(format!("volumeMount {volume:?} needs an absolute mountPath")))?;
                mounts.push(Mount {
                    source,
                    destination: destination.into(),
                    read_only: m["readOnly"].as_bool() == Some(true),
                });
            }
            let working_dir =
                c["workingDir"].as_str().map(String::from).or(defaults.working_dir.clone()).map(PathBuf::from);
            let isolation = match (runtime, image) {
                ("process", _) => Isolation::Process,
                (binary, Some(image)) => Isolation::Oci(Box::new(self.oci_options(c, binary, image).map_err(fail)?)),
                (_, None) => return Err(fail("no image".into())),
            };
            specs.push(ContainerSpec {
                log_path: self.pod_log_dir().join(&name).join("0.log"),
                name,
                argv,
                env,
                working_dir,
                log_max_bytes: LOG_MAX_BYTES,
                mounts,
                isolation,
                stdin: c["stdin"] == true,
            });
        }
        Ok(specs)
    }

    fn hostname(&self) -> String {
        self.pod["spec"]["hostname"].as_str().unwrap_or(self.name()).to_string()
    }

    fn oci_options(&self, c: &Value, binary: &str, image: &PulledImage) -> Result<OciOptions, String> {
        let name = c["name"].as_str().unwrap_or("");
        let pod_security = &self.pod["spec"]["securityContext"];
        let security = &c["securityContext"];
        let setting =
            |key: &str| security.get(key).filter(|v| !v.is_null()).or(pod_security.get(key).filter(|v| !v.is_null()));
        let image_user =
            image.unpacked.defaults.user.as_deref().map(|u| lookup_user(&image.unpacked.rootfs, u)).transpose()?;
        let uid = match setting("runAsUser").and_then(Value::as_u64) {
            Some(uid) => uid as u32,
            None => image_user.map(|(uid, _)| uid).unwrap_or(0),
        };
        let gid = match setting("runAsGroup").and_then(Value::as_u64) {
            Some(gid) => gid as u32,
            None => image_user.map(|(_, gid)| gid).unwrap_or(0),
        };
        if setting("runAsNonRoot").and_then(Value::as_bool) == Some(true) && uid == 0 {
            return Err("runAsNonRoot is set but the container would run as root (uid 0); set runAsUser".into());
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
        };
        let limits = &c["resources"]["limits"];
        let requests = &c["resources"]["requests"];
        let quantity = |v: &Value, parse: fn(&str) -> Option<u64>, what: &str| -> Result<Option<u64>, String> {
            match v.as_str() {
                None => Ok(v.as_u64().map(|n| if what == "cpu" { n * 1000 } else { n })),
                Some(text) => parse(text).map(Some).ok_or_else(|| format!("{what} quantity {text:?} is not valid")),
            }
        };
        let id = format!("{}-{name}", self.uid());
        let privileged = security["privileged"].as_bool() == Some(true);
        Ok(OciOptions {
            binary: binary.to_string(),
            state_root: self.data_dir.join("run").join(binary),
            bundle: self.pod_dir().join(name).join("bundle"),
            image_rootfs: image.unpacked.rootfs.clone(),
            hostname: self.hostname(),
            host_uts: self.pod["spec"]["hostNetwork"].as_bool() == Some(true),
            uid,
            gid,
            supplemental_gids: pod_security["supplementalGroups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_u64().map(|g| g as u32))
                .collect(),
            read_only_root: security["readOnlyRootFilesystem"].as_bool() == Some(true),
            privileged,
            no_new_privileges: security["allowPrivilegeEscalation"].as_bool() == Some(false),
            capabilities_add: strings(&security["capabilities"]["add"]),
            capabilities_drop: strings(&security["capabilities"]["drop"]),
            memory_limit: quantity(&limits["memory"], api::quantity::bytes, "memory")?,
            cpu_limit_millis: quantity(&limits["cpu"], api::quantity::millicores, "cpu")?,
            cpu_request_millis: quantity(&requests["cpu"], api::quantity::millicores, "cpu")?,
            cgroup_path: format!("/axle/{id}"),
            id,
        })
    }
}

/// Kubernetes' rule: `command` replaces the image's entrypoint (and drops its cmd), `args`
/// replace its cmd. A process container with neither runs its `image` as the executable.
fn command_line(
    command: Vec<String>,
    args: Vec<String>,
    defaults: &images::unpack::ImageDefaults,
    image: Option<&str>,
) -> Vec<String> {
    let mut argv = if command.is_empty() { defaults.entrypoint.clone() } else { command.clone() };
    if !args.is_empty() {
        argv.extend(args);
    } else if command.is_empty() {
        argv.extend(defaults.cmd.iter().cloned());
    }
    if argv.is_empty() {
        argv.extend(image.filter(|i| i.starts_with('/')).map(String::from));
    }
    argv
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// `$(VAR)` references to earlier variables, as Kubernetes expands them (`$$` escapes).
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn json_source(kind: &str, spec: &Value) -> Value {
    serde_json::json!({ kind: spec })
}

fn mode(source: &Value) -> u32 {
    source["defaultMode"].as_u64().map(|m| m as u32).unwrap_or(0o644)
}

/// A path inside a volume: relative, no `..`.
fn relative(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let valid = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if valid {
        Ok(p.to_path_buf())
    } else {
        Err(format!("path {path:?} must be relative and stay inside the volume"))
    }
}

/// A hostPath volume, checked (or created) by its `type`.
fn host_path(spec: &Value) -> Result<PathBuf, String> {
    let path = spec["path"].as_str().filter(|p| p.starts_with('/')).ok_or("hostPath needs an absolute path")?;
    let path = PathBuf::from(path);
    let kind = spec["type"].as_str().unwrap_or("");
    let meta = std::fs::metadata(&path);
    use std::os::unix::fs::FileTypeExt;
    let ok = match kind {
        "" => true,
        "DirectoryOrCreate" => {
            std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            true
        }
        "FileOrCreate" => {
            if meta.is_err() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            }
            true
        }
        "Directory" => meta.as_ref().is_ok_and(|m| m.is_dir()),
        "File" => meta.as_ref().is_ok_and(|m| m.is_file()),
        "Socket" => meta.as_ref().is_ok_and(|m| m.file_type().is_socket()),
        "CharDevice" => meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()),
        "BlockDevice" => meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()),
        other => return Err(format!("hostPath type {other:?} is not one Kubernetes defines")),
    };
    if !ok {
        return Err(format!("hostPath {} is not a {kind} on this node", path.display()));
    }
    Ok(path)
}

/// Writes a volume's files afresh (a changed ConfigMap's old keys disappear).
fn write_files(dir: &Path, files: &[(PathBuf, Vec<u8>, Option<u32>)], default_mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (path, content, file_mode) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&target, content).map_err(|e| format!("{}: {e}", target.display()))?;
        let mode = file_mode.unwrap_or(default_mode) & 0o777;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `user[:group]` of an image config: numbers, or names looked up in the image's
/// `/etc/passwd` and `/etc/group`.
fn lookup_user(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
    let (user, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let find = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name)).then(|| {
                let id = fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
                let gid = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(id);
                (id, gid)
            })
        })
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, find("etc/passwd", user).map(|(_, g)| g).unwrap_or(0)),
        Err(_) => {
            find("etc/passwd", user).ok_or_else(|| format!("the image's user {user:?} is not in its /etc/passwd"))?
        }
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => find("etc/group", g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use images::unpack::ImageDefaults;

    #[test]
    fn base64_decodes_secret_values() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("!!"), None);
    }

    #[test]
    fn command_and_args_combine_with_the_image_like_kubernetes() {
        let image = ImageDefaults {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["--default".into()],
            ..ImageDefaults::default()
        };
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(vec![], vec![], &image, None), v(&["/entry", "--default"]));
        assert_eq!(command_line(vec![], v(&["-x"]), &image, None), v(&["/entry", "-x"]));
        assert_eq!(command_line(v(&["/bin/sh"]), vec![], &image, None), v(&["/bin/sh"]));
        assert_eq!(command_line(v(&["/bin/sh"]), v(&["-c", "id"]), &image, None), v(&["/bin/sh", "-c", "id"]));
        assert_eq!(command_line(vec![], vec![], &ImageDefaults::default(), Some("/usr/bin/app")), v(&["/usr/bin/app"]));
    }

    #[test]
    fn env_references_expand_like_kubernetes() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
    }

    #[test]
    fn volume_paths_stay_inside() {
        assert!(relative("conf/app.yaml").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
        assert!(host_path(&serde_json::json!({"path": "relative"})).is_err());
        assert!(host_path(&serde_json::json!({"path": "/nonexistent-axle", "type": "Directory"})).is_err());
        assert!(host_path(&serde_json::json!({"path": "/tmp", "type": "Bogus"})).is_err());
    }

    #[test]
    fn image_users_resolve_from_the_rootfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\nnav:x:1000:1001::/:/bin/sh\n")
            .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "video:x:44:\n").expect("group");
        assert_eq!(lookup_user(dir.path(), "nav"), Ok((1000, 1001)));
        assert_eq!(lookup_user(dir.path(), "nav:video"), Ok((1000, 44)));
        assert_eq!(lookup_user(dir.path(), "1234:5"), Ok((1234, 5)));
        assert!(lookup_user(dir.path(), "ghost").is_err());
    }
}
