/*
 * A stand-in for Windows' bcryptprimitives.dll, for running the Windows agent under
 * Wine 8.0 only (tests/tests/windows_agent.rs). Rust's std (>= 1.78) gets its random
 * numbers from ProcessPrng in bcryptprimitives.dll, which Windows 10 and later have and
 * Wine 8.0 lacks; without it the program does not load. This gives the same call on top
 * of BCryptGenRandom with the system's preferred RNG, which Wine has. It is never
 * shipped: real Windows uses its own.
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
