//! The DHT11 pulse decoder, on what a GPIO capture can produce: any levels and durations, given
//! directly (mode 0) or as edge timestamps (mode 1, through `pulses_from_edges` as the GPIO
//! backend does).
//!
//! Invariants: decoding never panics; a decoded frame is finite, made of whole and tenth parts as
//! the protocol carries them, and unchanged by trailing levels or leading idle-high time; and a
//! reading the sampler accepts (`check_range`) lies inside the DHT11's datasheet range.

#![no_main]

use autoprov_agent::sensor::{
    HUMIDITY_RANGE, Measurement, Pulse, TEMPERATURE_RANGE, check_range, decode, pulses_from_edges,
};
use libfuzzer_sys::fuzz_target;

fn pulses(data: &[u8]) -> Vec<Pulse> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    let items = rest
        .chunks_exact(3)
        .map(|c| (c[0], u16::from_le_bytes([c[1], c[2]])));
    if mode & 1 == 0 {
        items
            .map(|(flags, us)| Pulse {
                high: flags & 1 != 0,
                micros: if flags & 2 != 0 {
                    u32::from(us) << 8
                } else {
                    u32::from(us)
                },
            })
            .collect()
    } else {
        // Edge timestamps; flag bit 1 steps back in time, which a preempted capture can record.
        let mut t: u64 = 0;
        let edges: Vec<(u64, bool)> = items
            .map(|(flags, us)| {
                t = if flags & 2 != 0 {
                    t.saturating_sub(u64::from(us))
                } else {
                    t + u64::from(us)
                };
                (t, flags & 1 != 0)
            })
            .collect();
        pulses_from_edges(&edges)
    }
}

fn tenths(v: f64) -> bool {
    let x = v.abs() * 10.0;
    (x - x.round()).abs() < 1e-6
}

fuzz_target!(|data: &[u8]| {
    let train = pulses(data);
    let Ok(frame) = decode(&train) else {
        return;
    };
    assert!(frame.humidity_pct.is_finite() && frame.temperature_c.is_finite());
    assert!(
        (0.0..=255.0 + 25.5).contains(&frame.humidity_pct),
        "{frame:?}"
    );
    assert!(frame.temperature_c.abs() <= 255.0 + 12.7, "{frame:?}");
    assert!(
        tenths(frame.humidity_pct) && tenths(frame.temperature_c),
        "{frame:?}"
    );

    let mut longer = train.clone();
    longer.push(Pulse {
        high: false,
        micros: 50,
    });
    longer.push(Pulse {
        high: true,
        micros: 70,
    });
    assert_eq!(
        decode(&longer),
        Ok(frame),
        "trailing levels changed the frame"
    );
    let mut idle = vec![Pulse {
        high: true,
        micros: 1000,
    }];
    idle.extend_from_slice(&train);
    assert_eq!(
        decode(&idle),
        Ok(frame),
        "leading idle time changed the frame"
    );

    let m = Measurement {
        temperature_c: frame.temperature_c,
        humidity_pct: frame.humidity_pct,
    };
    if let Ok(accepted) = check_range(m) {
        assert!(
            TEMPERATURE_RANGE.contains(&accepted.temperature_c),
            "{accepted:?}"
        );
        assert!(
            HUMIDITY_RANGE.contains(&accepted.humidity_pct),
            "{accepted:?}"
        );
    }
});
