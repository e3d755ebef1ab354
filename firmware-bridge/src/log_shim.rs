//! Logging shim: forwards to `defmt` or `log` depending on the enabled
//! feature, or compiles to nothing. Arguments must be plain integers or
//! `&str` so that both backends can format them.

#[cfg(feature = "defmt")]
macro_rules! bridge_log {
    (info, $($arg:tt)*) => { ::defmt::info!($($arg)*) };
    (warn, $($arg:tt)*) => { ::defmt::warn!($($arg)*) };
    (error, $($arg:tt)*) => { ::defmt::error!($($arg)*) };
}

#[cfg(feature = "log")]
macro_rules! bridge_log {
    (info, $($arg:tt)*) => { ::log::info!($($arg)*) };
    (warn, $($arg:tt)*) => { ::log::warn!($($arg)*) };
    (error, $($arg:tt)*) => { ::log::error!($($arg)*) };
}

#[cfg(not(any(feature = "defmt", feature = "log")))]
macro_rules! bridge_log {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        // Evaluate arguments for type checking only; nothing is emitted.
        $(let _ = &$arg;)*
    }};
}
