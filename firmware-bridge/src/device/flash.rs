//! The flash abstraction the model store runs on.

/// Value of an erased flash byte.
pub const ERASED_BYTE: u8 = 0xFF;

/// NOR-style flash: erase sets a sector to [`ERASED_BYTE`]; writes program
/// previously erased, `write_align`-aligned ranges.
pub trait Flash {
    /// Error of a flash operation (including power loss in simulation).
    type Error: core::fmt::Debug;
    /// Erase unit in bytes.
    fn sector_size(&self) -> u32;
    /// Write unit: write addresses and lengths are multiples of it.
    fn write_align(&self) -> u32;
    /// Total size in bytes.
    fn capacity(&self) -> u32;
    /// Erases the sector starting at `addr` (sector-aligned).
    fn erase_sector(&mut self, addr: u32) -> Result<(), Self::Error>;
    /// Programs `data` at `addr` (both aligned to `write_align`).
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
}

impl<F: Flash + ?Sized> Flash for &mut F {
    type Error = F::Error;
    fn sector_size(&self) -> u32 {
        (**self).sector_size()
    }
    fn write_align(&self) -> u32 {
        (**self).write_align()
    }
    fn capacity(&self) -> u32 {
        (**self).capacity()
    }
    fn erase_sector(&mut self, addr: u32) -> Result<(), Self::Error> {
        (**self).erase_sector(addr)
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), Self::Error> {
        (**self).write(addr, data)
    }
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(addr, buf)
    }
}

/// Where status records and the two model slots live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashLayout {
    /// Erase unit.
    pub sector_size: u32,
    /// Write unit.
    pub write_align: u32,
    /// First of the two status sectors (ping-pong).
    pub status_base: u32,
    /// Size of one status record slot (multiple of `write_align`).
    pub record_len: u32,
    /// Start of slot A and slot B.
    pub slot_base: [u32; 2],
    /// Size of one model slot.
    pub slot_size: u32,
}

/// Why a [`FlashLayout`] cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// Sector size or write alignment is zero, not a power of two, or alignment > sector.
    BadGeometry,
    /// A sector holds fewer than two status records.
    SectorTooSmall,
    /// The layout does not fit in the flash or overflows u32.
    TooLarge,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::BadGeometry => f.write_str(
                "sector size / write alignment must be powers of two, alignment <= sector",
            ),
            LayoutError::SectorTooSmall => {
                f.write_str("a sector must hold at least two status records")
            }
            LayoutError::TooLarge => f.write_str("layout does not fit in flash"),
        }
    }
}

/// Minimum size of a status record before rounding up to `write_align`.
pub const MIN_RECORD_LEN: u32 = 256;

impl FlashLayout {
    /// Two status sectors at `base`, then slot A and slot B of `slot_sectors` sectors each.
    pub fn new(
        sector_size: u32,
        write_align: u32,
        base: u32,
        slot_sectors: u32,
        capacity: u32,
    ) -> Result<Self, LayoutError> {
        if sector_size == 0
            || write_align == 0
            || !sector_size.is_power_of_two()
            || !write_align.is_power_of_two()
            || write_align > sector_size
        {
            return Err(LayoutError::BadGeometry);
        }
        if !base.is_multiple_of(sector_size) {
            return Err(LayoutError::BadGeometry);
        }
        let record_len = MIN_RECORD_LEN
            .div_ceil(write_align)
            .checked_mul(write_align)
            .ok_or(LayoutError::TooLarge)?;
        if sector_size / record_len < 2 {
            return Err(LayoutError::SectorTooSmall);
        }
        let slot_size = slot_sectors
            .checked_mul(sector_size)
            .filter(|&s| s > 0)
            .ok_or(LayoutError::TooLarge)?;
        let slot_a = base
            .checked_add(2 * sector_size)
            .ok_or(LayoutError::TooLarge)?;
        let slot_b = slot_a.checked_add(slot_size).ok_or(LayoutError::TooLarge)?;
        let end = slot_b.checked_add(slot_size).ok_or(LayoutError::TooLarge)?;
        if end > capacity {
            return Err(LayoutError::TooLarge);
        }
        Ok(FlashLayout {
            sector_size,
            write_align,
            status_base: base,
            record_len,
            slot_base: [slot_a, slot_b],
            slot_size,
        })
    }

    /// Total bytes the layout needs from `status_base`.
    pub fn total_len(&self) -> u32 {
        2 * self.sector_size + 2 * self.slot_size
    }

    /// Status records per status sector.
    pub fn records_per_sector(&self) -> u32 {
        self.sector_size / self.record_len
    }

    /// Address of record `index` in status sector `sector` (0 or 1).
    pub fn record_addr(&self, sector: u32, index: u32) -> u32 {
        self.status_base + sector * self.sector_size + index * self.record_len
    }
}
