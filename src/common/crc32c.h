// CRC-32C (Castagnoli), the checksum of WAL records. Uses the SSE4.2 crc32
// instruction when the CPU has it, a slicing table otherwise; both give the
// same value (tested).
#pragma once

#include <cstddef>
#include <cstdint>

namespace engram::crc32c {

// Extend(crc, data, n): the CRC of (whatever crc covered) followed by data.
uint32_t Extend(uint32_t crc, const void* data, size_t n);
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }
// The portable path, exposed so tests can compare it with the hardware path.
uint32_t ExtendPortable(uint32_t crc, const void* data, size_t n);

}  // namespace engram::crc32c
