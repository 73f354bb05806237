//! Which objects a producer sends and a consumer yields: predicates on
//! metadata, and sampling.

use super::Metadata;

type Predicate = Box<dyn FnMut(&Metadata) -> bool + Send>;

/// Predicates that must all accept an object's metadata, then a sample.
#[derive(Default)]
pub(crate) struct Filter {
    predicates: Vec<Predicate>,
    /// Keep each object with this probability.
    fraction: Option<f64>,
    rng: u64,
}

impl Filter {
    pub(crate) fn add(&mut self, keep: impl FnMut(&Metadata) -> bool + Send + 'static) {
        self.predicates.push(Box::new(keep));
    }

    /// Keeps each object with probability `fraction`, clamped to `[0, 1]`.
    pub(crate) fn sample(&mut self, fraction: f64) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self.fraction = Some(fraction);
        // Seeded from the OS (through a random key), never zero.
        self.rng = crate::key::Key::new().as_uuid().as_u128() as u64 | 1;
    }

    pub(crate) fn keep(&mut self, metadata: &Metadata) -> bool {
        if !self.predicates.iter_mut().all(|keep| keep(metadata)) {
            return false;
        }
        match self.fraction {
            None => true,
            Some(fraction) => self.next_unit() < fraction,
        }
    }

    /// A uniform number in `[0, 1)` (xorshift64*).
    fn next_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_and_samples_filter() {
        let mut filter = Filter::default();
        filter.add(|m| {
            m.get("i")
                .and_then(|v| v.as_i64())
                .is_some_and(|i| i % 2 == 0)
        });
        assert!(filter.keep(&Metadata::new().with("i", 2)));
        assert!(!filter.keep(&Metadata::new().with("i", 3)));
        assert!(!filter.keep(&Metadata::new()));

        let mut half = Filter::default();
        half.sample(0.5);
        let kept = (0..10_000).filter(|_| half.keep(&Metadata::new())).count();
        assert!((4_000..6_000).contains(&kept), "{kept}");
        let mut none = Filter::default();
        none.sample(0.0);
        assert!((0..1000).all(|_| !none.keep(&Metadata::new())));
        let mut all = Filter::default();
        all.sample(f64::INFINITY);
        assert!((0..1000).all(|_| all.keep(&Metadata::new())));
    }
}
