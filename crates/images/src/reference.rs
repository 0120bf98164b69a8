//! Image references: `[registry/]name[:tag][@sha256:…]`.

use crate::{digest_hex, ImagesError};
use std::fmt;

/// An image reference, normalized for the car's own registry: the registry host, if any, is
/// dropped (every image in the car is served by the car), as is Docker Hub's `library/` prefix,
/// so `docker.io/library/busybox:1.36` and `busybox:1.36` are the same image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ImagesError> {
        let invalid = |why: &str| ImagesError::InvalidReference { reference: text.to_string(), why: why.to_string() };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                digest_hex(digest).map_err(|_| invalid("the digest must be sha256:<64 hex digits>"))?;
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(rest[last_slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !valid {
                return Err(invalid("a tag is up to 128 letters, digits, '_', '.' or '-'"));
            }
        }
        let mut components: Vec<&str> = name.split('/').collect();
        if components.len() > 1 {
            let first = components[0];
            if first.contains(['.', ':']) || first == "localhost" {
                let registry = components.remove(0);
                let docker_hub = registry == "docker.io" || registry == "index.docker.io";
                if docker_hub && components.len() == 2 && components[0] == "library" {
                    components.remove(0);
                }
            }
        }
        let valid_component = |c: &&str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if components.is_empty() || !components.iter().all(valid_component) {
            return Err(invalid(
                "a name is lowercase letters, digits and separators ('.', '_', '-') in '/'-separated parts",
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag,
        };
        Ok(Reference { repository: components.join("/"), tag, digest })
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn lookup(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized_for_the_car() {
        let r = |s: &str| Reference::parse(s).map(|r| r.to_string()).map_err(|e| e.to_string());
        assert_eq!(r("busybox"), Ok("busybox:latest".into()));
        assert_eq!(r("docker.io/library/busybox:1.36"), Ok("busybox:1.36".into()));
        assert_eq!(r("127.0.0.1:6443/apps/nav:2.1"), Ok("apps/nav:2.1".into()));
        assert_eq!(r("localhost/nav"), Ok("nav:latest".into()));
        assert_eq!(r("ghcr.io/acme/nav"), Ok("acme/nav:latest".into()));
        let pinned = format!("nav@sha256:{}", "0".repeat(64));
        let parsed = Reference::parse(&pinned).expect("valid");
        assert_eq!((parsed.tag.clone(), parsed.lookup().len()), (None, 71));
        for bad in ["", "Nav", "nav:", "nav@sha256:12", "nav:-x", "a//b", "-nav"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
