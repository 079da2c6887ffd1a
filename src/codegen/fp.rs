//! The thread's floating-point mode: flush-to-zero and denormals-are-zero for compiled
//! steps (as XLA and PyTorch's CPU kernels run), saved and restored around them.

/// Flushes denormal results to zero and reads denormal operands as zero while alive
/// (MXCSR FTZ and DAZ, as XLA and PyTorch's CPU kernels run), restoring the caller's mode.
/// Denormals cost ~100 cycles per operation here; Adam's second moment of tiny gradients
/// lands in that range.
pub(crate) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

/// The calling thread's SSE floating-point mode (MXCSR; 0 elsewhere than x86-64).
pub fn fp_mode() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut m: u32 = 0;
        // SAFETY: stmxcsr only reads the SSE control register.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut m, options(nostack)) };
        m
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// Sets the calling thread's SSE floating-point mode (a value from `fp_mode`).
pub fn set_fp_mode(m: u32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: ldmxcsr of a value read by stmxcsr (possibly with FTZ/DAZ added).
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &m, options(nostack, readonly))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = m;
}

/// Sets FTZ and DAZ in the calling thread for good.
pub fn flush_denormals_in_this_thread() {
    std::mem::forget(FlushDenormals::new());
}

impl FlushDenormals {
    const BITS: u32 = (1 << 15) | (1 << 6);
    pub(crate) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved: u32 = 0;
            // SAFETY: stmxcsr/ldmxcsr only read and write the SSE control register.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack));
                let set = saved | Self::BITS;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &set, options(nostack, readonly));
            }
            Self { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the value read in `new`.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, readonly));
        }
    }
}
