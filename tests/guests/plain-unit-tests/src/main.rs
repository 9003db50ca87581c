//! Helpers and their unit tests, with no Fastly APIs in them.

fn main() {}

/// The checksum a test asserts on; traps when asked for one of nothing.
pub fn checksum(bytes: &[u8]) -> u32 {
    if bytes.is_empty() {
        core::arch::wasm32::unreachable();
    }
    bytes.iter().map(|&b| u32::from(b)).sum()
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn sums() {
        assert_eq!(checksum(b"ab"), 195);
    }

    #[test]
    fn traps_in_a_helper() {
        checksum(b"");
    }
}
