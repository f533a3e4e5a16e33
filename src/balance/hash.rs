//! A small, stable 64-bit hash for ip-hash and for sticky-cookie ids: FNV-1a with a key
//! folded into its starting state, then murmur3's 64-bit finalizer so that every input bit
//! reaches every output bit.
//!
//! Stable across builds and Rust versions (std's `DefaultHasher` promises neither), so a
//! client keeps its backend, and a cookie its meaning, across restarts and upgrades. Not
//! cryptographic: it spreads and disguises, it does not keep secrets.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` under `key`: different keys give unrelated hashes of the same bytes.
pub fn hash64(key: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ finalize(key);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    finalize(h)
}

/// murmur3's `fmix64`: a bijection that spreads each bit over the whole word.
fn finalize(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_pinned_so_clients_keep_their_backend_across_versions() {
        // If these change, every ip-hash client and every sticky cookie moves on upgrade.
        assert_eq!(hash64(0, b"a"), PINNED_A);
        assert_eq!(hash64(1, b"a"), PINNED_A_KEY_1);
    }

    const PINNED_A: u64 = 0x82a2_a958_a9be_ce5b;
    const PINNED_A_KEY_1: u64 = 0x73e0_6e57_4120_228a;

    #[test]
    fn a_one_bit_change_flips_about_half_the_output() {
        let mut flipped = 0;
        for i in 0u32..1000 {
            flipped += (hash64(7, &i.to_be_bytes()) ^ hash64(7, &(i ^ 1).to_be_bytes())).count_ones();
        }
        let average = f64::from(flipped) / 1000.0;
        assert!((28.0..36.0).contains(&average), "average bits flipped {average}");
    }
}
