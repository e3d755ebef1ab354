//! Ed25519 key files for signing model images.
//!
//! A key pair is two text files: `NAME.key` holds the 32-byte secret seed as 64 hex digits
//! (created with mode 0600 on Unix) and `NAME.pub` the 32-byte public key as 64 hex digits.
//! The public key is what devices pin.

use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not hold 64 hex digits.
    #[error("{0}: expected 64 hex digits (a 32-byte Ed25519 key)")]
    Format(PathBuf),
    /// The public key is not a valid curve point.
    #[error("{0}: not a valid Ed25519 public key")]
    BadPublicKey(PathBuf),
    /// Refusing to overwrite an existing key.
    #[error("{0} exists; refusing to overwrite a key")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let t = text.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Format(path.to_path_buf()));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
            .map_err(|_| KeyError::Format(path.to_path_buf()))?;
    }
    Ok(out)
}

/// Reads a secret key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
}

/// Reads a public key file (raw 32 bytes, checked to be a valid point).
pub fn read_public_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let bytes = read_hex32(path)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey(path.to_path_buf()))?;
    Ok(bytes)
}

/// Creates `base.key` and `base.pub` from 32 bytes of OS randomness; returns both paths.
pub fn generate(base: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let key_path = base.with_extension("key");
    let pub_path = base.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let mut seed = [0u8; 32];
    let urandom = Path::new("/dev/urandom");
    std::fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io(urandom))?;
    let key = SigningKey::from_bytes(&seed);
    write_secret(&key_path, &format!("{}\n", hex(&seed)))?;
    std::fs::write(
        &pub_path,
        format!("{}\n", hex(key.verifying_key().as_bytes())),
    )
    .map_err(io(&pub_path))?;
    Ok((key_path, pub_path))
}

fn write_secret(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_read_back_and_refuse_overwrite() {
        let dir = std::env::temp_dir().join(format!("edgeseg-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (k, p) = generate(&dir.join("dev")).unwrap();
        let sk = read_signing_key(&k).unwrap();
        assert_eq!(read_public_key(&p).unwrap(), *sk.verifying_key().as_bytes());
        assert!(matches!(
            generate(&dir.join("dev")),
            Err(KeyError::Exists(_))
        ));
        std::fs::write(dir.join("bad.pub"), "zz").unwrap();
        assert!(matches!(
            read_public_key(&dir.join("bad.pub")),
            Err(KeyError::Format(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
